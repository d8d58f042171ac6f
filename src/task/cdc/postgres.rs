//! Change data capture from PostgreSQL into the raw zone: pgoutput changes, batched as DMS
//! batches them ([`super::batch`]), written exactly once.
//!
//! Invariants:
//! - the slot is confirmed only after the batch's end position is durably the task's
//!   `confirmed_position`;
//! - a transaction that ends at or before `confirmed_position` is skipped, so a restart never
//!   writes a change twice;
//! - `_position` is the commit LSN and the change's number in its transaction, both
//!   zero-padded hexadecimal: it sorts in exact commit order;
//! - every U row is a whole after-image: unchanged TOASTed values come from the old tuple
//!   (REPLICA IDENTITY FULL) or are recovered by [`super::toast`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{Field, Schema};
use pgwire_replication::ReplicationEvent;
use sqlx::PgConnection;
use tokio::sync::watch;

use super::batch::{BatchWriter, Rows, Turn};
use super::checkpoint::Checkpoint;
use super::{Events, LogLevel, TaskCommand, TaskError, TaskEvent};
use crate::config::TaskConfig;
use crate::ident::TableId;
use crate::lake::{Storage, layout};
use crate::source::SelectionRules;
use crate::source::postgres::PgEndpoint;
use crate::source::postgres::copy_binary::TextBatchBuilder;
use crate::source::postgres::pgoutput::{
    self, Message, OldTuple, Relation, ReplicaIdentity, Value,
};
use crate::source::postgres::replication::{format_lsn, parse_lsn};
use crate::source::postgres::types::Kind;
use crate::task::stats::CdcOutcome;
use crate::task::toast;

/// How often slot lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);

pub(super) struct CdcRun {
    pub pg: PgEndpoint,
    pub storage: Storage,
    pub task: TaskConfig,
    pub checkpoint: Arc<Checkpoint>,
    pub events: Events,
    pub stop: watch::Receiver<Option<TaskCommand>>,
    pub until_caught_up: bool,
}

/// One relation of the stream, as its last Relation message described it.
struct RelationInfo {
    key: TableId,
    selected: bool,
    columns: Arc<[String]>,
    kinds: Vec<Kind>,
    /// Variable-length columns, which PostgreSQL may store out of line (TOAST).
    toastable: Vec<bool>,
    identity: ReplicaIdentity,
    /// `name type` of each column, to record schema changes.
    signature: String,
    /// Name, type OID and typmod of each column, as the stream last described them.
    types: Vec<(String, u32, i32)>,
    /// Which columns make up the replica identity key.
    key_columns: Vec<bool>,
}

impl CdcRun {
    pub async fn run(mut self) -> Result<CdcOutcome, TaskError> {
        let slot = self.task.slot_name();
        let publication = self.task.publication_name();
        let rules = SelectionRules::new(&self.task.include, &self.task.exclude);
        let state = self.checkpoint.snapshot().await;
        let cdc = state.cdc.clone().unwrap_or_default();

        super::batch::remove_pending_batch(
            &self.storage,
            &self.checkpoint,
            &self.events,
            &self.task,
            &cdc,
        )
        .await?;
        let confirmed = cdc
            .confirmed_position
            .as_deref()
            .or(state.snapshot_position.as_deref())
            .and_then(parse_lsn)
            .unwrap_or(0);
        let mut control = self.pg.connect().await?;
        let caught_up_at = if self.until_caught_up {
            // Everything committed before now is before this message in the stream.
            Some(self.pg.heartbeat(&mut control).await?)
        } else {
            None
        };
        self.storage.clean_spool(&self.task.name);
        let mut stream = self.pg.stream(&slot, &publication, confirmed).await?;
        self.events.log(
            LogLevel::Info,
            format!(
                "CDC from slot {slot} (publication {publication}) after position {}",
                format_lsn(confirmed)
            ),
        );

        let mut writer = BatchWriter::new(
            self.storage.clone(),
            self.task.clone(),
            self.checkpoint.clone(),
            self.events.clone(),
            &state,
            format_lsn(confirmed),
            (slot.clone(), publication.clone()),
        );
        let mut relations: HashMap<u32, RelationInfo> = HashMap::new();
        let mut txn: Option<(u64, i64, u32)> = None; // commit LSN, commit time, next seq
        let mut skipping = false;
        let mut confirmed_lsn = confirmed;
        let interval = Duration::from_secs(self.task.target_settings.cdc_max_batch_interval.max(1));
        let min_bytes = self
            .task
            .target_settings
            .cdc_min_file_size
            .saturating_mul(1024);
        let heartbeat_every =
            Duration::from_secs(self.task.cdc_settings.heartbeat_frequency.max(1) * 60);
        let mut last_heartbeat = Instant::now();
        let mut last_lag = Instant::now() - LAG_INTERVAL;
        let mut stopping: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let event = tokio::select! {
                event = stream.recv() => event?,
                _ = tick.tick() => None,
                _ = self.stop.changed(), if stopping.is_none() => {
                    stopping = Some(Instant::now());
                    None
                }
            };
            match event {
                Some(ReplicationEvent::Begin {
                    final_lsn,
                    commit_time_micros,
                    ..
                }) => {
                    // The server already starts after the confirmed point; this guard keeps
                    // the exactly-once promise should a server or library ever resend.
                    skipping = final_lsn.as_u64() < confirmed_lsn;
                    txn = Some((final_lsn.as_u64(), pg_to_unix_micros(commit_time_micros), 0));
                }
                Some(ReplicationEvent::XLogData { data, .. }) => {
                    let message = pgoutput::decode(&data).map_err(|e| TaskError::Internal {
                        task: self.task.name.clone(),
                        message: format!("decoding the change stream: {e}"),
                    })?;
                    match message {
                        Message::Relation(r) => {
                            self.relation(&mut control, &rules, &mut relations, &mut writer, r, txn)
                                .await?
                        }
                        Message::Insert { .. }
                        | Message::Update { .. }
                        | Message::Delete { .. }
                        | Message::Truncate { .. }
                            if !skipping =>
                        {
                            let Some((commit_lsn, commit_micros, seq)) = &mut txn else {
                                return Err(self.internal("a change outside a transaction"));
                            };
                            writer
                                .change(&relations, message, *commit_lsn, seq, *commit_micros)
                                .await?;
                        }
                        _ => {}
                    }
                }
                Some(ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                }) => {
                    let end = end_lsn.as_u64();
                    if !skipping {
                        writer.commit(format_lsn(end), pg_to_unix_micros(commit_time_micros));
                    }
                    txn = None;
                    if writer.is_empty() {
                        // Nothing of ours in flight: the slot may move past this transaction.
                        confirmed_lsn = confirmed_lsn.max(end);
                        stream.confirm(confirmed_lsn);
                    }
                }
                Some(ReplicationEvent::Message { lsn, prefix, .. }) => {
                    if prefix == "tributary.heartbeat" && txn.is_none() && writer.is_empty() {
                        confirmed_lsn = confirmed_lsn.max(lsn.as_u64());
                        stream.confirm(confirmed_lsn);
                    }
                    if caught_up_at.is_some_and(|at| lsn.as_u64() >= at) && txn.is_none() {
                        if let Some(end) = writer.flush().await?.as_deref().and_then(parse_lsn) {
                            stream.confirm(end);
                            confirmed_lsn = confirmed_lsn.max(end);
                        }
                        self.events.log(
                            LogLevel::Info,
                            "caught up: every change committed before the start is written",
                        );
                        break;
                    }
                }
                Some(ReplicationEvent::KeepAlive { .. })
                | Some(ReplicationEvent::StoppedAt { .. }) => {}
                None => {}
            }
            // Batch boundaries fall between transactions only.
            let turn = writer
                .end_of_turn(txn.is_some(), stopping, min_bytes, interval)
                .await?;
            let (Turn::Go { written } | Turn::Stopped { written }) = &turn else {
                break;
            };
            if let Some(end) = written.as_deref().and_then(parse_lsn) {
                stream.confirm(end);
                confirmed_lsn = confirmed_lsn.max(end);
            }
            if matches!(turn, Turn::Stopped { .. }) {
                break;
            }
            if self.task.cdc_settings.heartbeat_enable
                && last_heartbeat.elapsed() >= heartbeat_every
            {
                let result = self.pg.heartbeat(&mut control).await;
                self.side_query(&mut control, "heartbeat", result).await;
                last_heartbeat = Instant::now();
            }
            if last_lag.elapsed() >= LAG_INTERVAL {
                last_lag = Instant::now();
                let result = self.pg.slot_status_on(&mut control, &slot).await;
                if let Some(Some(status)) = self
                    .side_query(&mut control, "measuring slot lag", result)
                    .await
                {
                    writer.stats.slot_lag_bytes = status.lag_bytes;
                    let limit = self.task.cdc_settings.slot_wal_warning_mb as i64 * 1024 * 1024;
                    if status.retained_bytes > limit {
                        self.events.log(
                            LogLevel::Warn,
                            format!(
                                "slot {slot} holds {} MB of WAL (limit {} MB; {} MB of it not yet captured): the task is behind, or a long transaction on the source holds the WAL; the source's disk fills until it moves on",
                                status.retained_bytes / 1_048_576,
                                self.task.cdc_settings.slot_wal_warning_mb,
                                status.lag_bytes / 1_048_576
                            ),
                        );
                    }
                    self.events.send(TaskEvent::Cdc(writer.stats.clone()));
                }
            }
        }
        stream.close().await;
        // The stream's last status update may not have reached the server before it closed.
        if confirmed_lsn > 0 {
            let result = self.pg.advance_slot(&slot, confirmed_lsn).await;
            self.side_query(&mut control, "confirming the slot", result)
                .await;
        }
        let tables = writer.tables.into_values().map(|t| t.stats).collect();
        Ok(CdcOutcome {
            tables,
            confirmed_position: Some(writer.stats.confirmed_position),
        })
    }

    fn internal(&self, message: &str) -> TaskError {
        TaskError::Internal {
            task: self.task.name.clone(),
            message: message.to_owned(),
        }
    }

    /// Side work on the control connection (heartbeat, slot lag): a failure is logged and
    /// the connection renewed, never a reason to stop capturing.
    async fn side_query<T>(
        &self,
        control: &mut PgConnection,
        what: &str,
        result: Result<T, crate::source::SourceError>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.events
                    .log(LogLevel::Warn, format!("{what}: {e}; retrying later"));
                if let Ok(c) = self.pg.connect().await {
                    *control = c;
                }
                None
            }
        }
    }

    /// A Relation message: a table's columns, sent before its first change in a session
    /// and again after its schema changes.
    async fn relation(
        &self,
        conn: &mut PgConnection,
        rules: &SelectionRules,
        relations: &mut HashMap<u32, RelationInfo>,
        writer: &mut BatchWriter,
        r: Relation,
        txn: Option<(u64, i64, u32)>,
    ) -> Result<(), TaskError> {
        let schema = if r.schema.is_empty() {
            "pg_catalog".to_owned()
        } else {
            r.schema.clone()
        };
        let key = TableId::new(schema, r.name.clone());
        let selected = rules.matches_id(&key);
        let types: Vec<(String, u32, i32)> = r
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_oid, c.typmod))
            .collect();
        // pgoutput sends a relation again after any cache invalidation (ANALYZE, VACUUM,
        // GRANT): only a real change of columns makes a new schema.
        let key_columns: Vec<bool> = r.columns.iter().map(|c| c.is_key).collect();
        if relations
            .get(&r.id)
            .is_some_and(|known| known.key_columns != key_columns)
        {
            // Kept rows are keyed by the old key's values: they no longer name the same rows.
            writer.toast.reset(&key);
        }
        if let Some(known) = relations.get_mut(&r.id)
            && known.types == types
            && known.key == key
        {
            known.identity = r.replica_identity;
            known.key_columns = key_columns;
            return Ok(());
        }
        let mut kinds = Vec::with_capacity(r.columns.len());
        let mut signature = Vec::with_capacity(r.columns.len());
        for c in &r.columns {
            let (kind, type_name) = if selected {
                let result = self.pg.type_kind(conn, c.type_oid, c.typmod).await;
                self.side_query(conn, "looking up a column type", result)
                    .await
                    .unwrap_or((None, format!("type {}", c.type_oid)))
            } else {
                (None, String::new())
            };
            signature.push(format!("{} {type_name}", c.name));
            kinds.push(kind.unwrap_or(Kind::Text));
        }
        let info = RelationInfo {
            key: key.clone(),
            selected,
            columns: r.columns.iter().map(|c| c.name.clone()).collect(),
            toastable: kinds.iter().map(toast::is_toastable).collect(),
            kinds,
            identity: r.replica_identity,
            signature: signature.join(", "),
            types,
            key_columns,
        };
        if selected {
            let position = txn
                .map(|(lsn, _, seq)| change_position(lsn, seq))
                .unwrap_or_default();
            let table_schema = Arc::new(Schema::new(
                info.columns
                    .iter()
                    .zip(&info.kinds)
                    .map(|(c, k)| Field::new(c, k.data_type(), true))
                    .collect::<Vec<_>>(),
            ));
            let builder = Rows::Postgres(TextBatchBuilder::new(table_schema.clone(), &info.kinds));
            writer.schema(&key, &info.signature, table_schema, builder, position)?;
        }
        relations.insert(r.id, info);
        Ok(())
    }
}

fn toast_columns(info: &RelationInfo) -> toast::Columns<'_> {
    toast::Columns {
        names: &info.columns,
        kinds: &info.kinds,
        key: &info.key_columns,
        toastable: &info.toastable,
    }
}

/// Whether the key columns of two row images differ.
fn key_differs(key_columns: &[bool], old: &[Value], new: &[Value]) -> bool {
    let text = |v: &Value| match v {
        Value::Text(b) | Value::Binary(b) => Some(b.clone()),
        _ => None,
    };
    key_columns
        .iter()
        .zip(old.iter().zip(new))
        .any(|(is_key, (o, n))| *is_key && text(o) != text(n))
}

/// Deletes every CDC file of the task's tables (all but `LOAD*` files under each table's
/// folder) and any file of a pending batch: a reload starts a new stream.
pub(super) async fn delete_cdc_files(
    storage: &Storage,
    task: &TaskConfig,
    state: &super::checkpoint::TaskState,
) -> Result<usize, TaskError> {
    let mut removed = 0;
    let mut tables: Vec<&TableId> = state.tables.keys().collect();
    if let Some(cdc) = &state.cdc {
        tables.extend(cdc.tables.keys());
        let pending = cdc
            .pending_batch
            .iter()
            .flat_map(|p| p.keys.iter().cloned());
        super::batch::delete_recorded(storage, task, &pending.collect::<Vec<_>>()).await?;
    }
    tables.sort();
    tables.dedup();
    for table in tables {
        removed += delete_table_cdc_files(storage, task, table).await?;
    }
    Ok(removed)
}

/// Deletes the CDC files (all but `LOAD*`) in the folder of `table`, and only there;
/// returns how many there were.
pub(super) async fn delete_table_cdc_files(
    storage: &Storage,
    task: &TaskConfig,
    table: &TableId,
) -> Result<usize, TaskError> {
    let prefix = layout::table_prefix(&task.target_settings.bucket_folder, &task.source, table);
    let mut removed = 0;
    for object in storage.list_all(&prefix).await? {
        let name = object.key.rsplit('/').next().unwrap_or("");
        if layout::is_inside(&prefix, &object.key) && layout::parse_load_number(name).is_none() {
            storage.delete(&object.key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The `_position` of change number `seq` of the transaction that commits at `commit_lsn`.
/// With `seq` 0 and a snapshot's LSN, it is the first position the snapshot does not hold:
/// a transaction is in a slot's snapshot exactly when its commit record comes before the
/// slot's consistent point.
pub(super) fn change_position(commit_lsn: u64, seq: u32) -> String {
    format!("{commit_lsn:016X}{seq:08X}")
}

/// Microseconds since 2000-01-01 (PostgreSQL) to since 1970-01-01.
fn pg_to_unix_micros(pg: i64) -> i64 {
    pg.saturating_add(946_684_800_000_000)
}

/// PostgreSQL changes into the open batch.
impl BatchWriter {
    /// One change of the stream. `seq` numbers the changes of the transaction whose commit
    /// is at `commit_lsn`; a change of primary key takes two numbers (a D, then an I).
    async fn change(
        &mut self,
        relations: &HashMap<u32, RelationInfo>,
        message: Message,
        commit_lsn: u64,
        seq: &mut u32,
        commit_micros: i64,
    ) -> Result<(), TaskError> {
        let mut next_position = || {
            let p = change_position(commit_lsn, *seq);
            *seq += 1;
            p
        };
        let relation_id = match &message {
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. } => *relation,
            Message::Truncate { relations: ids, .. } => {
                let position = next_position();
                let mut recorded = false;
                for id in ids {
                    if let Some(info) = relations.get(id).filter(|i| i.selected)
                        && self.truncated(&info.key, &position)
                    {
                        self.toast.truncated(&info.key);
                        recorded = true;
                    }
                }
                if recorded {
                    self.touch(commit_micros);
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        // Changes of tables the task does not select are passed by, whatever they hold.
        let Some(info) = relations.get(&relation_id).filter(|i| i.selected) else {
            return Ok(());
        };
        // Before any TOAST recovery: a change already in a reloaded table's load is not
        // looked at at all. (All changes of a transaction compare alike: by commit LSN.)
        if self.has_reload_mark(&info.key)
            && self.in_reload(&info.key, &change_position(commit_lsn, 0))
        {
            return Ok(());
        }
        let rows: Vec<(&'static str, pgoutput::Tuple)> = match message {
            Message::Insert { new, .. } => vec![("I", new)],
            Message::Delete { old, .. } => {
                let (OldTuple::Key(t) | OldTuple::Full(t)) = old;
                vec![("D", t)]
            }
            Message::Update { old, new, .. } => {
                let mut new = new;
                if new.iter().any(|v| matches!(v, Value::UnchangedToast)) {
                    // The value is not in the stream: a full old image has it; otherwise
                    // it is recovered from this run's rows or the raw zone.
                    if let Some(OldTuple::Full(old)) = &old {
                        for (value, old) in new.iter_mut().zip(old) {
                            if matches!(value, Value::UnchangedToast) {
                                *value = old.clone();
                            }
                        }
                    } else {
                        let old_key = match &old {
                            Some(OldTuple::Key(k)) => Some(k.as_slice()),
                            _ => None,
                        };
                        self.recover_toast(info, &mut new, old_key).await?;
                    }
                }
                // A changed key: the old row goes away and the new one appears, so a reader
                // applying rows by key keeps no stale row.
                let old_key = match old {
                    Some(OldTuple::Key(k)) => Some(k),
                    Some(OldTuple::Full(o)) if key_differs(&info.key_columns, &o, &new) => Some(o),
                    _ => None,
                };
                match old_key {
                    Some(old) => vec![("D", old), ("I", new)],
                    None => vec![("U", new)],
                }
            }
            _ => return Ok(()),
        };
        for (op, values) in rows {
            let position = next_position();
            self.append(info, op, &values, position, commit_micros)?;
            if info.identity == ReplicaIdentity::Full || op == "D" {
                // FULL rows need no recovery and are not kept: forget what was kept.
                self.toast.forget(&info.key, &info.key_columns, &values);
                if info.identity == ReplicaIdentity::Full {
                    self.toast.not_cached(&info.key);
                }
            } else {
                self.toast
                    .remember(&info.key, &toast_columns(info), &values);
            }
        }
        Ok(())
    }

    /// Fills the unchanged TOASTed values of an update's new tuple ([`toast`]).
    async fn recover_toast(
        &mut self,
        info: &RelationInfo,
        new: &mut [Value],
        old_key: Option<&[Value]>,
    ) -> Result<(), TaskError> {
        if self.toast_logged.insert(info.key.clone()) {
            self.events.log(
                LogLevel::Info,
                format!(
                    "{}: recovering unchanged TOASTed values of updates from this run's rows or the raw zone (replica identity {:?}; FULL puts them in the stream)",
                    info.key, info.identity
                ),
            );
        }
        let truncated_at = self.totals.get(&info.key).and_then(|t| {
            t.schema_changes
                .iter()
                .rfind(|c| c.empties_table())
                .map(|c| c.position.clone())
        });
        let Some(prefix) = self.tables.get(&info.key).map(|t| t.prefix.clone()) else {
            return Err(TaskError::Internal {
                task: self.task.name.clone(),
                message: format!("{}: an update before the table's schema", info.key),
            });
        };
        let result = self
            .toast
            .recover(
                &info.key,
                &prefix,
                &toast_columns(info),
                new,
                old_key,
                truncated_at.as_deref(),
            )
            .await;
        result.map_err(|e| match e {
            // The target failing is not the table's fault: the usual storage error.
            toast::ToastError::Storage(e)
            | toast::ToastError::Read(crate::lake::inspect::InspectError::Storage(e)) => {
                TaskError::Storage(e)
            }
            e => self.table_error(
                &info.key,
                format!(
                    "an update left a TOASTed column unchanged (replica identity {:?}, so the value is not in the stream), and it could not be recovered: {e}. Run ALTER TABLE {} REPLICA IDENTITY FULL, then reload the task (--reload)",
                    info.identity,
                    crate::source::postgres::sql_table_name(&info.key),
                ),
            ),
        })
    }

    /// Adds one row of pgoutput values to its table's batch.
    fn append(
        &mut self,
        info: &RelationInfo,
        op: &'static str,
        values: &[Value],
        position: String,
        commit_micros: i64,
    ) -> Result<(), TaskError> {
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let column = info.columns.get(i).map_or("?", String::as_str);
            texts.push(match v {
                Value::Null => None,
                Value::Text(b) => Some(std::str::from_utf8(b).map_err(|_| {
                    self.table_error(
                        &info.key,
                        format!("column {column} at {position} is not valid UTF-8"),
                    )
                })?),
                Value::Binary(_) | Value::UnchangedToast => {
                    return Err(self.table_error(
                        &info.key,
                        format!("column {column} at {position} arrived without its text value"),
                    ));
                }
            });
        }
        self.append_row(&info.key, op, position, commit_micros, |rows| {
            let Rows::Postgres(builder) = rows else {
                return Err("a PostgreSQL row for a table of another source".into());
            };
            builder.append_row(texts).map_err(|e| {
                format!(
                    "decoding column {}: {}",
                    e.column
                        .and_then(|i| info.columns.get(i))
                        .map_or("?", String::as_str),
                    e.message
                )
            })
        })
    }
}
