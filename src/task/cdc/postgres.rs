//! PostgreSQL's part of the CDC loop ([`super`]): pgoutput changes, batched as DMS batches
//! them ([`crate::task::batch`]), written exactly once.
//!
//! Invariants:
//! - the slot is confirmed only after the batch's end position is durably the task's
//!   `confirmed_position`;
//! - a transaction that ends at or before `confirmed_position` is skipped, so a restart never
//!   writes a change twice;
//! - `_position` is the commit LSN and the change's number in its transaction, both
//!   zero-padded hexadecimal: it sorts in exact commit order;
//! - every U row is a whole after-image: unchanged TOASTed values come from the old tuple
//!   (REPLICA IDENTITY FULL) or are recovered by [`crate::task::toast`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{Field, Schema};
use pgwire_replication::ReplicationEvent;
use sqlx::PgConnection;

use super::{CdcRun, Engine, Flow};
use crate::ident::TableId;
use crate::source::SelectionRules;
use crate::source::postgres::PgEndpoint;
use crate::source::postgres::copy_binary::TextBatchBuilder;
use crate::source::postgres::pgoutput::{
    self, Message, OldTuple, Relation, ReplicaIdentity, Value,
};
use crate::source::postgres::replication::{ChangeStream, format_lsn, parse_lsn};
use crate::source::postgres::types::Kind;
use crate::task::batch::{BatchWriter, TableRows};
use crate::task::position::ChangePosition;
use crate::task::stats::CdcOutcome;
use crate::task::toast::{self, ToastRecovery};
use crate::task::{Events, LogLevel, TaskError};

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

impl CdcRun<PgEndpoint> {
    /// Streams the task's slot from its confirmed position through the CDC loop.
    pub async fn run(self) -> Result<CdcOutcome, TaskError> {
        let CdcRun {
            endpoint: pg,
            storage,
            task,
            checkpoint,
            events,
            stop,
            until_caught_up,
        } = self;
        let slot = task.slot_name();
        let publication = task.publication_name();
        let state = checkpoint.snapshot().await;
        super::prepare(&storage, &checkpoint, &events, &task, &state).await?;
        let confirmed = state
            .cdc
            .as_ref()
            .and_then(|c| c.confirmed_position.as_deref())
            .or(state.snapshot_position.as_deref())
            .and_then(parse_lsn)
            .unwrap_or(0);
        let mut control = pg.connect().await?;
        let caught_up_at = if until_caught_up {
            // Everything committed before now is before this message in the stream.
            Some(pg.heartbeat(&mut control).await?)
        } else {
            None
        };
        let stream = pg.stream(&slot, &publication, confirmed).await?;
        events.log(
            LogLevel::Info,
            format!(
                "CDC from slot {slot} (publication {publication}) after position {}",
                format_lsn(confirmed)
            ),
        );
        let writer = BatchWriter::new(
            storage,
            task.clone(),
            checkpoint,
            events.clone(),
            &state,
            format_lsn(confirmed),
            (slot.clone(), publication),
        );
        let cdc = &task.cdc_settings;
        let engine = Postgres {
            pg,
            task: task.name.clone(),
            events: events.clone(),
            control,
            stream,
            slot,
            rules: SelectionRules::new(&task.include, &task.exclude),
            relations: HashMap::new(),
            txn: None,
            skipping: false,
            confirmed_lsn: confirmed,
            caught_up_at,
            heartbeat_every: cdc
                .heartbeat_enable
                .then(|| Duration::from_secs(cdc.heartbeat_frequency.max(1) * 60)),
            last_heartbeat: Instant::now(),
            slot_wal_warning_mb: cdc.slot_wal_warning_mb,
            changes: RowChanges {
                toast: ToastRecovery::new(writer.storage.clone(), toast::CACHE_BYTES),
                toast_logged: HashSet::new(),
            },
        };
        super::run(engine, writer, stop, events).await
    }
}

/// PostgreSQL's part of the CDC loop: pgoutput messages into the batch, the slot confirmed.
struct Postgres {
    pg: PgEndpoint,
    /// The task's name, for errors.
    task: String,
    events: Events,
    /// A normal connection beside the stream: types, heartbeats, slot lag.
    control: PgConnection,
    stream: ChangeStream,
    slot: String,
    rules: SelectionRules,
    relations: HashMap<u32, RelationInfo>,
    /// The open transaction: commit LSN, commit time, next change number.
    txn: Option<(u64, i64, u32)>,
    /// The open transaction ends before the confirmed position: passed by.
    skipping: bool,
    confirmed_lsn: u64,
    /// `--until-caught-up`: the position of the heartbeat written at the start.
    caught_up_at: Option<u64>,
    heartbeat_every: Option<Duration>,
    last_heartbeat: Instant,
    slot_wal_warning_mb: u64,
    changes: RowChanges,
}

impl Engine for Postgres {
    type Event = ReplicationEvent;

    async fn next(&mut self) -> Result<ReplicationEvent, TaskError> {
        match self.stream.recv().await? {
            Some(event) => Ok(event),
            None => Err(self.internal("the server ended the replication stream")),
        }
    }

    async fn apply(
        &mut self,
        writer: &mut BatchWriter,
        event: ReplicationEvent,
    ) -> Result<Flow, TaskError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                // The server already starts after the confirmed point; this guard keeps
                // the exactly-once promise should a server or library ever resend.
                self.skipping = final_lsn.as_u64() < self.confirmed_lsn;
                self.txn = Some((final_lsn.as_u64(), pg_to_unix_micros(commit_time_micros), 0));
            }
            ReplicationEvent::XLogData { data, .. } => {
                let message = pgoutput::decode(&data)
                    .map_err(|e| self.internal(&format!("decoding the change stream: {e}")))?;
                match message {
                    Message::Relation(r) => self.relation(writer, r).await?,
                    Message::Insert { .. }
                    | Message::Update { .. }
                    | Message::Delete { .. }
                    | Message::Truncate { .. }
                        if !self.skipping =>
                    {
                        let Some((commit_lsn, commit_micros, seq)) = &mut self.txn else {
                            return Err(self.internal("a change outside a transaction"));
                        };
                        self.changes
                            .change(
                                writer,
                                &self.relations,
                                message,
                                *commit_lsn,
                                seq,
                                *commit_micros,
                            )
                            .await?;
                    }
                    _ => {}
                }
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                let end = end_lsn.as_u64();
                if !self.skipping {
                    writer.commit(format_lsn(end), pg_to_unix_micros(commit_time_micros));
                }
                self.txn = None;
                if writer.is_empty() {
                    // Nothing of ours in flight: the slot may move past this transaction.
                    self.confirm(end);
                }
            }
            ReplicationEvent::Message { lsn, prefix, .. } => {
                if prefix == "tributary.heartbeat" && self.txn.is_none() && writer.is_empty() {
                    self.confirm(lsn.as_u64());
                }
                if self.caught_up_at.is_some_and(|at| lsn.as_u64() >= at) && self.txn.is_none() {
                    let written = writer.flush().await?;
                    self.written(writer, written.as_deref(), false).await?;
                    return Ok(Flow::CaughtUp);
                }
            }
            ReplicationEvent::KeepAlive { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(Flow::Go)
    }

    fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    async fn written(
        &mut self,
        writer: &mut BatchWriter,
        written: Option<&str>,
        _stopped: bool,
    ) -> Result<(), TaskError> {
        if let Some(end) = written.and_then(parse_lsn) {
            self.changes.toast.batch_written(writer.last_files());
            self.confirm(end);
        }
        Ok(())
    }

    async fn side_work(&mut self) {
        if let Some(every) = self.heartbeat_every
            && self.last_heartbeat.elapsed() >= every
        {
            let result = self.pg.heartbeat(&mut self.control).await;
            side_query(
                &self.pg,
                &self.events,
                &mut self.control,
                "heartbeat",
                result,
            )
            .await;
            self.last_heartbeat = Instant::now();
        }
    }

    async fn lag_bytes(&mut self) -> Option<i64> {
        let result = self.pg.slot_status_on(&mut self.control, &self.slot).await;
        let status = side_query(
            &self.pg,
            &self.events,
            &mut self.control,
            "measuring slot lag",
            result,
        )
        .await??;
        let limit = self.slot_wal_warning_mb as i64 * 1024 * 1024;
        if status.retained_bytes > limit {
            self.events.log(
                LogLevel::Warn,
                format!(
                    "slot {} holds {} MB of WAL (limit {} MB; {} MB of it not yet captured): the task is behind, or a long transaction on the source holds the WAL; the source's disk fills until it moves on",
                    self.slot,
                    status.retained_bytes / 1_048_576,
                    self.slot_wal_warning_mb,
                    status.lag_bytes / 1_048_576
                ),
            );
        }
        Some(status.lag_bytes)
    }

    async fn close(mut self, writer: &mut BatchWriter) -> String {
        self.stream.close().await;
        // The stream's last status update may not have reached the server before it closed.
        if self.confirmed_lsn > 0 {
            let result = self.pg.advance_slot(&self.slot, self.confirmed_lsn).await;
            side_query(
                &self.pg,
                &self.events,
                &mut self.control,
                "confirming the slot",
                result,
            )
            .await;
        }
        writer.stats.confirmed_position.clone()
    }
}

impl Postgres {
    /// Lets the slot move up to `lsn` (never back).
    fn confirm(&mut self, lsn: u64) {
        self.confirmed_lsn = self.confirmed_lsn.max(lsn);
        self.stream.confirm(self.confirmed_lsn);
    }

    fn internal(&self, message: &str) -> TaskError {
        TaskError::Internal {
            task: self.task.clone(),
            message: message.to_owned(),
        }
    }

    /// A Relation message: a table's columns, sent before its first change in a session
    /// and again after its schema changes.
    async fn relation(&mut self, writer: &mut BatchWriter, r: Relation) -> Result<(), TaskError> {
        let schema = if r.schema.is_empty() {
            "pg_catalog".to_owned()
        } else {
            r.schema.clone()
        };
        let key = TableId::new(schema, r.name.clone());
        let selected = self.rules.matches_id(&key);
        let types: Vec<(String, u32, i32)> = r
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_oid, c.typmod))
            .collect();
        // pgoutput sends a relation again after any cache invalidation (ANALYZE, VACUUM,
        // GRANT): only a real change of columns makes a new schema.
        let key_columns: Vec<bool> = r.columns.iter().map(|c| c.is_key).collect();
        if self
            .relations
            .get(&r.id)
            .is_some_and(|known| known.key_columns != key_columns)
        {
            // Kept rows are keyed by the old key's values: they no longer name the same rows.
            self.changes.toast.reset(&key);
        }
        if let Some(known) = self.relations.get_mut(&r.id)
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
                let result = self
                    .pg
                    .type_kind(&mut self.control, c.type_oid, c.typmod)
                    .await;
                side_query(
                    &self.pg,
                    &self.events,
                    &mut self.control,
                    "looking up a column type",
                    result,
                )
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
            let position = self
                .txn
                .map(|(lsn, _, seq)| ChangePosition::postgres(lsn, seq))
                .unwrap_or_default();
            let table_schema = Arc::new(Schema::new(
                info.columns
                    .iter()
                    .zip(&info.kinds)
                    .map(|(c, k)| Field::new(c, k.data_type(), true))
                    .collect::<Vec<_>>(),
            ));
            let builder = Box::new(TextBatchBuilder::new(table_schema.clone(), &info.kinds));
            writer.schema(&key, &info.signature, table_schema, builder, position)?;
        }
        self.relations.insert(r.id, info);
        Ok(())
    }
}

/// Side work on the control connection (types, heartbeat, slot lag): a failure is logged
/// and the connection renewed, never a reason to stop capturing.
async fn side_query<T>(
    pg: &PgEndpoint,
    events: &Events,
    control: &mut PgConnection,
    what: &str,
    result: Result<T, crate::source::SourceError>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            events.log(LogLevel::Warn, format!("{what}: {e}; retrying later"));
            if let Ok(c) = pg.connect().await {
                *control = c;
            }
            None
        }
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

impl TableRows for TextBatchBuilder {
    fn len(&self) -> usize {
        TextBatchBuilder::len(self)
    }

    fn bytes(&self) -> usize {
        self.text_bytes()
    }

    fn finish(&mut self) -> arrow_array::RecordBatch {
        TextBatchBuilder::finish(self)
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL) to since 1970-01-01.
fn pg_to_unix_micros(pg: i64) -> i64 {
    pg.saturating_add(946_684_800_000_000)
}

/// PostgreSQL's changes into the open batch, with the TOAST recovery they need.
struct RowChanges {
    toast: ToastRecovery,
    /// Tables whose TOAST recovery has been logged in this run.
    toast_logged: HashSet<TableId>,
}

impl RowChanges {
    /// One change of the stream. `seq` numbers the changes of the transaction whose commit
    /// is at `commit_lsn`; a change of primary key takes two numbers (a D, then an I).
    async fn change(
        &mut self,
        writer: &mut BatchWriter,
        relations: &HashMap<u32, RelationInfo>,
        message: Message,
        commit_lsn: u64,
        seq: &mut u32,
        commit_micros: i64,
    ) -> Result<(), TaskError> {
        let mut next_position = || {
            let p = ChangePosition::postgres(commit_lsn, *seq);
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
                        && writer.truncated(&info.key, &position)
                    {
                        self.toast.truncated(&info.key);
                        recorded = true;
                    }
                }
                if recorded {
                    writer.touch(commit_micros);
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
        if writer.has_reload_mark(&info.key)
            && writer.in_reload(&info.key, &ChangePosition::postgres(commit_lsn, 0))
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
                        self.recover_toast(writer, info, &mut new, old_key).await?;
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
            Self::append(writer, info, op, &values, position, commit_micros)?;
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
        writer: &mut BatchWriter,
        info: &RelationInfo,
        new: &mut [Value],
        old_key: Option<&[Value]>,
    ) -> Result<(), TaskError> {
        if self.toast_logged.insert(info.key.clone()) {
            writer.events.log(
                LogLevel::Info,
                format!(
                    "{}: recovering unchanged TOASTed values of updates from this run's rows or the raw zone (replica identity {:?}; FULL puts them in the stream)",
                    info.key, info.identity
                ),
            );
        }
        let truncated_at = writer.totals.get(&info.key).and_then(|t| {
            t.schema_changes
                .iter()
                .rfind(|c| c.empties_table())
                .map(|c| c.position.clone())
        });
        let Some(prefix) = writer.tables.get(&info.key).map(|t| t.prefix.clone()) else {
            return Err(TaskError::Internal {
                task: writer.task.name.clone(),
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
                truncated_at.as_ref().map(ChangePosition::as_str),
            )
            .await;
        result.map_err(|e| match e {
            // The target failing is not the table's fault: the usual storage error.
            toast::ToastError::Storage(e)
            | toast::ToastError::Read(crate::lake::inspect::InspectError::Storage(e)) => {
                TaskError::Storage(e)
            }
            e => writer.table_error(
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
        writer: &mut BatchWriter,
        info: &RelationInfo,
        op: &'static str,
        values: &[Value],
        position: ChangePosition,
        commit_micros: i64,
    ) -> Result<(), TaskError> {
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let column = info.columns.get(i).map_or("?", String::as_str);
            texts.push(match v {
                Value::Null => None,
                Value::Text(b) => Some(std::str::from_utf8(b).map_err(|_| {
                    writer.table_error(
                        &info.key,
                        format!("column {column} at {position} is not valid UTF-8"),
                    )
                })?),
                Value::Binary(_) | Value::UnchangedToast => {
                    return Err(writer.table_error(
                        &info.key,
                        format!("column {column} at {position} arrived without its text value"),
                    ));
                }
            });
        }
        writer.append_row(
            &info.key,
            op,
            position,
            commit_micros,
            |builder: &mut TextBatchBuilder| {
                builder.append_row(texts).map_err(|e| {
                    format!(
                        "decoding column {}: {}",
                        e.column
                            .and_then(|i| info.columns.get(i))
                            .map_or("?", String::as_str),
                        e.message
                    )
                })
            },
        )
    }
}
