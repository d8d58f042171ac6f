//! The binlog replication stream of a MySQL/MariaDB server, as events the CDC runner
//! understands: transaction boundaries with their positions, table maps that describe the
//! columns of the rows that follow, row changes as [`Value`]s, and statements (DDL).
//!
//! Invariants:
//! - the stream starts at a transaction boundary given by file and position, and every
//!   [`BinlogEvent::Commit`] carries the position right after its transaction, where a later
//!   stream can start without loss or repeat;
//! - columns are read from the table map's own metadata (`binlog_row_metadata = FULL`), so
//!   a row is always decoded with the schema it was written with, even long after an ALTER;
//! - the replica's server id is derived from the task name, so two tasks on one server do
//!   not cut each other's streams.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use mysql_async::BinlogStreamRequest;
use mysql_async::binlog::events::{
    EventData, OptionalMetaExtractor, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::prelude::Queryable;

use super::MyEndpoint;
pub use super::row_image::RowImages;
use super::row_image::{self, ColumnCtx};
use super::types::{ColumnDecoder, Kind};
use crate::source::position::BinlogPosition;
use crate::source::{SelectionRules, SourceError};

/// How often an idle server sends a heartbeat, so the runner sees where the binlog ends.
const HEARTBEAT: Duration = Duration::from_secs(1);

// Event type codes of the events read here (MariaDB's are not known to mysql_common).
const QUERY_EVENT: u8 = 2;
const MARIADB_GTID_EVENT: u8 = 162;
// Flags of a MariaDB GTID event: a single statement (DDL) without BEGIN/COMMIT; the first
// half of an XA transaction.
const FL_STANDALONE: u8 = 1;
const FL_PREPARED_XA: u8 = 0x40;
const MARIADB_QUERY_COMPRESSED: u8 = 165;
const MARIADB_ROWS_COMPRESSED_FIRST: u8 = 166;
const MARIADB_ROWS_COMPRESSED_LAST: u8 = 171;

/// The columns of a table as a table map describes them.
#[derive(Debug, Clone)]
pub struct TableMap {
    pub schema: String,
    pub table: String,
    pub names: Vec<String>,
    pub decoders: Vec<ColumnDecoder>,
    /// Primary key columns, by name.
    pub key: Vec<String>,
}

impl TableMap {
    pub fn id(&self) -> crate::ident::TableId {
        crate::ident::TableId::new(&self.schema, &self.table)
    }

    /// `name kind` of each column, to tell when a table's schema changed.
    pub fn signature(&self) -> String {
        self.names
            .iter()
            .zip(&self.decoders)
            .map(|(n, d)| format!("{n} {}", d.kind.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    Insert,
    Update,
    Delete,
}

/// What the runner reads from the stream.
#[derive(Debug)]
pub enum BinlogEvent {
    /// A transaction begins at `position` (the end of its GTID or BEGIN event); `time` is
    /// the event header's (seconds since the epoch). Its GTID goes into the positions that
    /// follow ([`BinlogPosition::gtid`]).
    Begin {
        position: u64,
        time: u32,
        /// Ends with COMMIT or XID; otherwise the next statement (a DDL) is the whole
        /// transaction.
        explicit: bool,
    },
    TableMap {
        table_id: u64,
        map: TableMap,
    },
    Rows {
        table_id: u64,
        op: RowOp,
        rows: RowImages,
    },
    /// A statement other than BEGIN/COMMIT (DDL, TRUNCATE), with its default schema.
    Statement {
        schema: String,
        sql: String,
        /// Where the stream stands after it.
        position: BinlogPosition,
        time: u32,
    },
    /// The transaction ends; the stream stands at `position`.
    Commit {
        position: BinlogPosition,
        time: u32,
    },
    /// The server is idle at `position`.
    Heartbeat {
        position: BinlogPosition,
    },
    /// An event of no interest (format description, a table not selected, …).
    Other,
}

/// A binlog stream from a position.
pub struct BinlogReader {
    endpoint: MyEndpoint,
    stream: mysql_async::BinlogStream,
    file: String,
    gtid: Option<String>,
    /// MariaDB: the last GTID of each replication domain, what [`BinlogPosition::gtid`]
    /// lists (a connect state resumes after all of them).
    gtids: BTreeMap<u32, String>,
    by_gtid: bool,
    /// Collation id → charset name, to decode text columns.
    charsets: HashMap<u16, String>,
    /// Whether events carry checksums (`binlog_checksum`), and whether the stream's format
    /// description has come: a rotate before it still has its checksum in its name.
    checksums: bool,
    format_seen: bool,
    /// How to read the rows of each selected table id, from its last table map.
    columns: HashMap<u64, Vec<ColumnCtx>>,
    /// The task's tables: rows of other tables are passed by undecoded.
    rules: SelectionRules,
}

/// A server id in 0x5400_0000..0x5500_0000 from the task name (FNV-1a), unique enough
/// among the replicas of one server and stable across runs.
pub fn server_id(task: &str) -> u32 {
    let hash = task.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    0x5400_0000 | (hash & 0x00ff_ffff)
}

impl BinlogReader {
    /// Streams the binlog from `start`, as replica `server_id`.
    pub async fn open(
        endpoint: &MyEndpoint,
        start: &BinlogPosition,
        server_id: u32,
        rules: SelectionRules,
    ) -> Result<Self, SourceError> {
        let e = endpoint;
        let mut conn = e.connect().await?;
        // MariaDB 10.10+ lists its UCA 14 collations without an id in COLLATIONS; their ids
        // are in COLLATION_CHARACTER_SET_APPLICABILITY (which has no ids in MySQL). Options:
        // the driver panics on a NULL read as a number.
        let mut collations: Vec<(Option<u64>, Option<String>)> = conn
            .query("SELECT id, character_set_name FROM information_schema.collations")
            .await
            .map_err(|err| e.classify(err, "reading collations"))?;
        if let Ok(more) = conn
            .query::<(Option<u64>, Option<String>), _>(
                "SELECT id, character_set_name FROM information_schema.collation_character_set_applicability",
            )
            .await
        {
            collations.extend(more);
        }
        let version: Option<String> = conn.query_first("SELECT @@version").await.unwrap_or(None);
        let mariadb = version.is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"));
        // MariaDB resumes by GTID (exact on this server and on a replica that takes over);
        // otherwise by file and position, which must still be on the server.
        let gtids = start
            .gtid
            .as_deref()
            .filter(|_| mariadb)
            .and_then(parse_mariadb_gtids);
        let files = e.binlog_files(&mut conn).await?;
        let checksum: Option<String> = conn
            .query_first("SELECT @@global.binlog_checksum")
            .await
            .map_err(|err| e.classify(err, "reading binlog_checksum"))?;
        let checksums = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        if gtids.is_none() && !files.contains(&start.file) {
            return Err(SourceError::Database {
                endpoint: e.name.clone(),
                context: format!("resuming the binlog at {start}"),
                message: format!(
                    "binlog file {} is no longer on the server (it has {}): it was purged before the task read it, so changes are lost to CDC. Run the task with --reload to load every table again, and keep binlogs longer (expire_logs_days / binlog_expire_logs_seconds)",
                    start.file,
                    match (files.first(), files.last()) {
                        (Some(a), Some(b)) => format!("{a} to {b}"),
                        _ => "none".into(),
                    }
                ),
            });
        }
        let mut settings = vec![
            format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos()),
            // MariaDB: send GTID events as they are (not as BEGIN), so each transaction's
            // GTID is known.
            "SET @mariadb_slave_capability = 4".to_string(),
        ];
        if let Some(g) = &gtids {
            settings.push(format!(
                "SET @slave_connect_state = '{}'",
                join_gtids(g).replace('\'', "")
            ));
            settings.push("SET @slave_gtid_strict_mode = 1".into());
            settings.push("SET @slave_gtid_ignore_duplicates = 0".into());
        }
        for sql in settings {
            conn.query_drop(&sql)
                .await
                .map_err(|err| e.classify(err, "preparing the binlog stream"))?;
        }
        let request = match &gtids {
            // With a connect state the server finds the file itself.
            Some(_) => BinlogStreamRequest::new(server_id)
                .with_filename(b"")
                .with_pos(4u64),
            None => BinlogStreamRequest::new(server_id)
                .with_filename(start.file.as_bytes())
                .with_pos(start.pos),
        };
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|err| e.classify(err, "requesting the binlog stream"))?;
        Ok(BinlogReader {
            endpoint: endpoint.clone(),
            stream,
            file: start.file.clone(),
            gtid: start.gtid.clone(),
            by_gtid: gtids.is_some(),
            checksums,
            format_seen: false,
            columns: HashMap::new(),
            gtids: gtids.unwrap_or_default(),
            charsets: collations
                .into_iter()
                .filter_map(|(id, name)| Some((id? as u16, name?.to_ascii_lowercase())))
                .collect(),
            rules,
        })
    }

    fn xa_error(&self) -> SourceError {
        self.error(
            "reading the binlog",
            "an XA transaction: its rows are binlogged at XA PREPARE, before the outcome is known, and tributary does not capture XA yet. Keep XA off the replicated databases",
        )
    }

    fn error(&self, context: &str, message: impl Into<String>) -> SourceError {
        SourceError::Database {
            endpoint: self.endpoint.name.clone(),
            context: context.into(),
            message: message.into(),
        }
    }

    fn position(&self, pos: u32) -> BinlogPosition {
        BinlogPosition {
            file: self.file.clone(),
            pos: pos as u64,
            gtid: self.gtid.clone(),
        }
    }

    /// The next event of interest; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<BinlogEvent>, SourceError> {
        let Some(event) = self.stream.next().await else {
            return Ok(None);
        };
        let event = event.map_err(|err| match err {
            mysql_async::Error::Server(s) if s.code == 1236 => self.error(
                "reading the binlog",
                format!(
                    "{} (error 1236): the position the task needs is not readable; if the binlog was purged, run the task with --reload",
                    s.message
                ),
            ),
            err => self.endpoint.classify(err, "reading the binlog"),
        })?;
        let header = event.header();
        let log_pos = header.log_pos();
        let time = header.timestamp();
        let raw_type = header.event_type_raw();
        if raw_type == MARIADB_GTID_EVENT {
            // seq_no (8 bytes), domain id (4), flags (1); the server id is the header's.
            let data = event.data();
            let flags = data.get(12).copied().unwrap_or(0);
            if flags & FL_PREPARED_XA != 0 {
                return Err(self.xa_error());
            }
            if data.len() >= 12 {
                let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
                let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or([0; 4]));
                let gtid = format!("{domain}-{}-{seq}", header.server_id());
                self.gtids.insert(domain, gtid);
            }
            self.gtid = Some(join_gtids(&self.gtids)).filter(|g| !g.is_empty());
            return Ok(Some(BinlogEvent::Begin {
                position: log_pos as u64,
                time,
                explicit: flags & FL_STANDALONE == 0,
            }));
        }
        if raw_type == MARIADB_QUERY_COMPRESSED
            || (MARIADB_ROWS_COMPRESSED_FIRST..=MARIADB_ROWS_COMPRESSED_LAST).contains(&raw_type)
        {
            return Err(self.error(
                "reading the binlog",
                "the server writes compressed binlog events (log_bin_compress = ON), which tributary does not read. SET GLOBAL log_bin_compress = OFF, then reload the task",
            ));
        }
        let data = event
            .read_data()
            .map_err(|err| self.error("decoding a binlog event", err.to_string()))?;
        let Some(data) = data else {
            return Ok(Some(BinlogEvent::Other));
        };
        Ok(Some(match data {
            EventData::RotateEvent(r) => {
                self.file = rotate_file_name(r.name_raw(), !self.format_seen, self.checksums);
                BinlogEvent::Heartbeat {
                    position: BinlogPosition {
                        file: self.file.clone(),
                        pos: r.position(),
                        gtid: self.gtid.clone(),
                    },
                }
            }
            EventData::GtidEvent(g) => {
                let sid = g.sid();
                let uuid: String = sid
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let dash = matches!(i, 4 | 6 | 8 | 10);
                        format!("{}{b:02x}", if dash { "-" } else { "" })
                    })
                    .collect();
                self.gtid = Some(format!("{uuid}:{}", g.gno()));
                // MySQL: a BEGIN query follows for a multi-statement transaction.
                BinlogEvent::Begin {
                    position: log_pos as u64,
                    time,
                    explicit: false,
                }
            }
            EventData::QueryEvent(q) if raw_type == QUERY_EVENT => {
                let sql = q.query().trim().to_string();
                if sql.eq_ignore_ascii_case("BEGIN") {
                    BinlogEvent::Begin {
                        position: log_pos as u64,
                        time,
                        explicit: true,
                    }
                } else if sql.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("XA ")) {
                    return Err(self.xa_error());
                } else if sql.eq_ignore_ascii_case("COMMIT") || sql.eq_ignore_ascii_case("ROLLBACK")
                {
                    // A ROLLBACK is binlogged only when non-transactional tables changed, and
                    // their changes stay: it ends the transaction as a COMMIT does.
                    BinlogEvent::Commit {
                        position: self.position(log_pos),
                        time,
                    }
                } else {
                    BinlogEvent::Statement {
                        schema: q.schema().into_owned(),
                        sql,
                        position: self.position(log_pos),
                        time,
                    }
                }
            }
            EventData::FormatDescriptionEvent(_) => {
                self.format_seen = true;
                BinlogEvent::Other
            }
            EventData::XidEvent(_) => BinlogEvent::Commit {
                position: self.position(log_pos),
                time,
            },
            EventData::TableMapEvent(tme)
                if self.rules.matches(&tme.database_name(), &tme.table_name()) =>
            {
                BinlogEvent::TableMap {
                    table_id: tme.table_id(),
                    map: self.table_map(&tme)?,
                }
            }
            EventData::RowsEvent(rows) => self.rows(&rows, log_pos)?,
            EventData::HeartbeatEvent => BinlogEvent::Heartbeat {
                position: self.position(log_pos),
            },
            _ => BinlogEvent::Other,
        }))
    }

    fn table_map(&mut self, tme: &TableMapEvent<'_>) -> Result<TableMap, SourceError> {
        let schema = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let context = format!("reading the binlog table map of {schema}.{table}");
        let bad = |m: String| self.error(&context, m);
        let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map_err(|err| bad(err.to_string()))?;
        let mut names = Vec::new();
        let mut enum_labels: Vec<Vec<String>> = Vec::new();
        let mut set_labels: Vec<Vec<String>> = Vec::new();
        for field in tme.iter_optional_meta() {
            match field.map_err(|err| bad(err.to_string()))? {
                OptionalMetadataField::ColumnName(n) => {
                    for name in n.iter_names() {
                        names.push(
                            name.map_err(|err| bad(err.to_string()))?
                                .name()
                                .into_owned(),
                        );
                    }
                }
                OptionalMetadataField::EnumStrValue(values) => {
                    for v in values.iter_values() {
                        let v = v.map_err(|err| bad(err.to_string()))?;
                        enum_labels
                            .push(v.values().iter().map(|l| l.value().into_owned()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(values) => {
                    for v in values.iter_values() {
                        let v = v.map_err(|err| bad(err.to_string()))?;
                        set_labels
                            .push(v.values().iter().map(|l| l.value().into_owned()).collect());
                    }
                }
                _ => {}
            }
        }
        let count = tme.columns_count() as usize;
        if names.len() != count {
            return Err(bad(
                "the table map carries no column names: binlog_row_metadata is not FULL (SET GLOBAL binlog_row_metadata = 'FULL', then reload the task)".into(),
            ));
        }
        let mut signedness = meta.iter_signedness();
        let mut charsets = meta.iter_charset();
        let mut enum_set_charsets = meta.iter_enum_and_set_charset();
        let (mut enums, mut sets) = (enum_labels.into_iter(), set_labels.into_iter());
        let mut decoders = Vec::with_capacity(count);
        let mut contexts = Vec::with_capacity(count);
        for (i, name) in names.iter().enumerate() {
            let column_type = tme
                .get_column_type(i)
                .map_err(|err| bad(err.to_string()))?
                .ok_or_else(|| bad(format!("column {i} has no type")))?;
            let column_meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let unsigned = if column_type.is_numeric_type() {
                signedness.next().unwrap_or(false)
            } else {
                false
            };
            let charset = if column_type.is_character_type() {
                charsets
                    .next()
                    .transpose()
                    .map_err(|err| bad(err.to_string()))?
            } else if column_type.is_enum_or_set_type() {
                enum_set_charsets
                    .next()
                    .transpose()
                    .map_err(|err| bad(err.to_string()))?
            } else {
                None
            };
            let charset = match charset {
                Some(id) => Some(self.charsets.get(&id).ok_or_else(|| {
                    bad(format!(
                        "column {name} has collation id {id}, which the server does not list"
                    ))
                })?),
                None => None,
            };
            let (ctx, kind) = row_image::column(
                &schema,
                &table,
                name,
                column_type,
                column_meta,
                unsigned,
                charset.map(String::as_str),
            )
            .map_err(bad)?;
            contexts.push(ctx);
            let mut decoder = ColumnDecoder::new(kind);
            match decoder.kind {
                Kind::Enum => decoder.labels = enums.next().unwrap_or_default(),
                Kind::Set => decoder.labels = sets.next().unwrap_or_default(),
                _ => {}
            }
            decoders.push(decoder);
        }
        let key = meta
            .iter_primary_key()
            .filter_map(|k| k.ok())
            .filter_map(|k| names.get(k as usize).cloned())
            .collect();
        self.columns.insert(tme.table_id(), contexts);
        Ok(TableMap {
            schema,
            table,
            names,
            decoders,
            key,
        })
    }

    /// The rows of a rows event that ends at `log_pos` in the current file.
    fn rows(&self, event: &RowsEventData<'_>, log_pos: u32) -> Result<BinlogEvent, SourceError> {
        let table_id = event.table_id();
        let op = match event {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => RowOp::Insert,
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => {
                RowOp::Update
            }
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                RowOp::Delete
            }
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(self.error(
                    "reading the binlog",
                    "a partial JSON update event (binlog_row_value_options = PARTIAL_JSON): its rows are not whole. SET GLOBAL binlog_row_value_options = '', then reload the task",
                ));
            }
        };
        let Some(tme) = self.stream.get_tme(table_id) else {
            return Err(self.error(
                "reading the binlog",
                format!("a rows event for table id {table_id} without its table map"),
            ));
        };
        if !self.rules.matches(&tme.database_name(), &tme.table_name()) {
            return Ok(BinlogEvent::Other);
        }
        let context = format!(
            "decoding a row of {}.{} (rows event ending at {}:{log_pos})",
            tme.database_name(),
            tme.table_name(),
            self.file
        );
        let Some(columns) = self.columns.get(&table_id) else {
            return Err(self.error(&context, "a rows event before its table map"));
        };
        let full = [event.columns_before_image(), event.columns_after_image()]
            .into_iter()
            .flatten()
            .all(|present| present.count_ones() == columns.len());
        if !full {
            return Err(self.error(
                &context,
                "a row image does not hold every column: binlog_row_image is not FULL (SET GLOBAL binlog_row_image = 'FULL', then reload the task)",
            ));
        }
        let rows = row_image::decode_rows(
            event.rows_data(),
            columns,
            event.columns_before_image().is_some(),
            event.columns_after_image().is_some(),
        )
        .map_err(|m| self.error(&context, m))?;
        Ok(BinlogEvent::Rows { table_id, op, rows })
    }

    /// Whether the stream resumed by GTID (MariaDB) rather than by file and position.
    pub fn by_gtid(&self) -> bool {
        self.by_gtid
    }

    /// The binlog file the stream is in.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub async fn close(self) {
        let _ = self.stream.close().await;
    }
}

/// A MariaDB GTID position (`0-1-100,1-1-7`) by domain; `None` for another form (MySQL's
/// `uuid:1-100`).
fn parse_mariadb_gtids(text: &str) -> Option<BTreeMap<u32, String>> {
    let mut gtids = BTreeMap::new();
    for gtid in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let parts: Vec<&str> = gtid.split('-').collect();
        let [domain, server, seq] = parts.as_slice() else {
            return None;
        };
        server.parse::<u32>().ok()?;
        seq.parse::<u64>().ok()?;
        gtids.insert(domain.parse().ok()?, gtid.to_string());
    }
    (!gtids.is_empty()).then_some(gtids)
}

fn join_gtids(gtids: &BTreeMap<u32, String>) -> String {
    gtids.values().cloned().collect::<Vec<_>>().join(",")
}

/// The file name of a rotate event. One that arrives before the format description (the
/// stream's first, fake one) was parsed without knowing that events carry a 4-byte
/// checksum, so its name still ends with it (bytes that may well be digits).
fn rotate_file_name(raw: &[u8], before_format_description: bool, checksums: bool) -> String {
    let name = match raw.len().checked_sub(4) {
        Some(end) if before_format_description && checksums => &raw[..end],
        _ => raw,
    };
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_gtid_positions_parse_by_domain() {
        let g = parse_mariadb_gtids("0-1-100,2-5-7").expect("parses");
        assert_eq!(g[&2], "2-5-7");
        assert_eq!(join_gtids(&g), "0-1-100,2-5-7");
        assert_eq!(
            parse_mariadb_gtids("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"),
            None
        );
        assert_eq!(parse_mariadb_gtids(""), None);
    }

    #[test]
    fn rotate_names_lose_their_checksum() {
        assert_eq!(
            rotate_file_name(b"mysql-bin.0000023\x01\xff7", true, true),
            "mysql-bin.000002"
        );
        assert_eq!(
            rotate_file_name(b"mysql-bin.000002", false, true),
            "mysql-bin.000002"
        );
        assert_eq!(
            rotate_file_name(b"mysql-bin.000002", true, false),
            "mysql-bin.000002"
        );
    }

    #[test]
    fn server_ids_are_stable_and_distinct() {
        assert_eq!(server_id("orders"), server_id("orders"));
        assert_ne!(server_id("orders"), server_id("customers"));
        assert_eq!(server_id("x") & 0xff00_0000, 0x5400_0000);
    }
}
