"""Reads curated Iceberg tables the way outside tools do, for the tests.

Usage: read_curated.py CATALOG TABLE [TABLE ...]   (TABLE: source.schema.table, or a JSON
array of its parts; CATALOG: the
SQLite file, or a postgres:// URL whose password is in PGPASSWORD). With S3_ENDPOINT set
(and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), tables in S3 are read from that server.

Prints one JSON object: {table: {"columns": names, "field_ids": {name: Iceberg field id},
"pyiceberg": rows, "duckdb": rows, "snapshots": n}}, rows
sorted, each value as text (None for NULL; booleans true/false; timestamps as epoch seconds
with 6 decimals; decimals and dates as their text), so the test compares them with the
source database's own text.
"""
import datetime
import decimal
import json
import os
import sys

import duckdb
import duckdb_ext
from pyiceberg.catalog.sql import SqlCatalog


def text(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return f"{value.timestamp():.6f}"
    if isinstance(value, (datetime.date, decimal.Decimal)):
        return str(value)
    return str(value)


def rows_of(columns, records):
    rows = [[text(r[c]) for c in columns] for r in records]
    return sorted(rows, key=lambda r: [(v is None, v) for v in r])


def main():
    catalog_db, tables = sys.argv[1], sys.argv[2:]
    if catalog_db.startswith("postgres"):
        # The password comes from PGPASSWORD, as for tributary.
        uri = "postgresql+psycopg2://" + catalog_db.split("://", 1)[1]
    else:
        uri = f"sqlite:///{catalog_db}"
    # Tables in S3 (moto): the endpoint and keys as each reader takes them.
    endpoint = os.environ.get("S3_ENDPOINT")
    s3 = {}
    if endpoint:
        s3 = {
            "s3.endpoint": endpoint,
            "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
        }
    catalog = SqlCatalog("tributary", uri=uri, warehouse="file:///tmp", **s3)
    extensions = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
    con = duckdb.connect(config={"extension_directory": extensions})
    con.execute("LOAD iceberg")
    if endpoint:
        con.execute("LOAD httpfs")
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?,"
            " URL_STYLE 'path', USE_SSL false)",
            [
                s3["s3.access-key-id"],
                s3["s3.secret-access-key"],
                s3["s3.region"],
                endpoint.split("://", 1)[-1],
            ],
        )
    out = {}
    for name in tables:
        # A JSON array gives the identifier's parts (names that hold dots).
        parts = json.loads(name) if name.startswith("[") else name.split(".")
        table = catalog.load_table(tuple(parts))
        columns = [f.name for f in table.schema().fields]
        arrow = table.scan().to_arrow()
        by_pyiceberg = rows_of(columns, arrow.to_pylist())
        cursor = con.execute(
            "SELECT * FROM iceberg_scan(?)", [table.metadata_location]
        )
        names = [d[0] for d in cursor.description]
        by_duckdb = rows_of(columns, [dict(zip(names, r)) for r in cursor.fetchall()])
        out[name] = {
            "columns": columns,
            "field_ids": {f.name: f.field_id for f in table.schema().fields},
            "pyiceberg": by_pyiceberg,
            "duckdb": by_duckdb,
            "snapshots": len(table.metadata.snapshots),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
