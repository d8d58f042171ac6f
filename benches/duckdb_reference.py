"""DuckDB 1.4.4 as the reference beside `tributary bench --curate` (run by it, timed by it).

  duckdb_reference.py merge FILES_JSON KEY OUT.parquet
      The curate merge over the raw files: FILES_JSON holds {"load": [...], "cdc": [...],
      "columns": [...]}; the newest change per KEY wins, D removes, written sorted by KEY.
  duckdb_reference.py query METADATA_JSON SQL
      SQL over iceberg_scan('<metadata>') (the table is `t` in SQL); prints the row count.
"""
import json
import os
import sys

import duckdb
import duckdb_ext


def connect(iceberg=False):
    extensions = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
    con = duckdb.connect(config={"extension_directory": extensions})
    if iceberg:
        con.execute("LOAD iceberg")
    return con


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def merge(files_json, key, out):
    files = json.load(open(files_json))
    cols = ", ".join(quote(c) for c in files["columns"])
    k = quote(key)
    con = connect()
    con.execute(
        f"""
        COPY (
          WITH latest AS (
            SELECT * FROM read_parquet(?, union_by_name = true)
            QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY "_position" DESC) = 1
          )
          SELECT {cols} FROM read_parquet(?, union_by_name = true) b
            WHERE NOT EXISTS (SELECT 1 FROM latest l WHERE l.{k} = b.{k})
          UNION ALL
          SELECT {cols} FROM latest WHERE "Op" <> 'D'
          ORDER BY {k}
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
        """,
        [files["cdc"], files["load"]],
    )
    print(con.execute("SELECT count(*) FROM read_parquet(?)", [out]).fetchone()[0])


def query(metadata, sql):
    con = connect(iceberg=True)
    con.execute(f"CREATE VIEW t AS SELECT * FROM iceberg_scan('{metadata}')")
    rows = con.execute(sql).fetchall()
    print(len(rows))


if __name__ == "__main__":
    if sys.argv[1] == "merge":
        merge(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        query(sys.argv[2], sys.argv[3])
