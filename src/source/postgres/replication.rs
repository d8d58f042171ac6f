//! Logical replication plumbing: the task's publication and slot, and the pgoutput stream.
//!
//! Invariants:
//! - the slot is created before the full load's snapshot and exports it, so the full load
//!   sees exactly the transactions committed before the slot's consistent point and the
//!   stream carries exactly those after it;
//! - the replication connection that exported the snapshot stays idle until the full load
//!   is over (any command on it would end the snapshot);
//! - the slot is only advanced by the caller, through [`ChangeStream::confirm`], once the
//!   changes up to that position are durable;
//! - the stream reads ahead of its caller by bytes, not by messages: at most
//!   [`READ_AHEAD_BYTES`] of messages wait in [`ChangeStream`]'s queue, plus the
//!   [`LIBRARY_EVENTS`] messages the replication library holds, whatever a transaction's
//!   size (a message is one row change, so one very wide row still arrives whole).
//!
//! Sessions use `DateStyle=ISO`, `IntervalStyle=postgres`, `TimeZone=UTC`,
//! `bytea_output=hex` and `extra_float_digits=1` (see [`super::SESSION_SETTINGS`]), so
//! pgoutput's text values and the full load's text casts are formatted alike.

use std::sync::Arc;

use futures::FutureExt;
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig,
};
use sqlx::{PgConnection, Row};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{PgEndpoint, SESSION_SETTINGS, Via, quote_ident};
use crate::config::TaskConfig;
use crate::ident::TableId;
use crate::source::position::{SourcePosition, format_lsn};
use crate::source::{Snapshot, SourceError};

/// Bytes of stream messages read ahead of the task, waiting in [`ChangeStream`]'s queue.
pub const READ_AHEAD_BYTES: usize = 8 * 1024 * 1024;
/// Messages the replication library buffers between its socket and [`ChangeStream`] (its
/// default, 8,192, held that many rows of whatever size).
pub const LIBRARY_EVENTS: usize = 16;

/// A slot as the server reports it.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub confirmed_flush: Option<String>,
    /// Bytes of WAL the slot holds back: current WAL position minus `restart_lsn`.
    pub retained_bytes: i64,
    /// WAL written since the slot's confirmed position (bytes): how far CDC is behind.
    pub lag_bytes: i64,
    pub active: bool,
    /// The server removed WAL the slot needed (`wal_status = 'lost'`, past
    /// `max_slot_wal_keep_size`): it can never stream again.
    pub lost: bool,
}

impl SlotStatus {
    /// Whether this is a pgoutput slot of `database`, one a task of it may stream or drop.
    pub fn is_of(&self, database: &str) -> bool {
        self.plugin.as_deref() == Some("pgoutput") && self.database.as_deref() == Some(database)
    }

    /// Whose slot this is, for people: its database and plugin.
    pub fn owner(&self) -> String {
        format!(
            "database {} (plugin {})",
            self.database.as_deref().unwrap_or("none: a physical slot"),
            self.plugin.as_deref().unwrap_or("none")
        )
    }
}

impl PgEndpoint {
    /// The replication client's settings, connecting through `via` (TLS is ours: the
    /// library's own would build aws-lc, see [`super::transport`]).
    fn replication_config(&self, slot: &str, publication: &str, via: &Via) -> ReplicationConfig {
        let options = SESSION_SETTINGS
            .iter()
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        ReplicationConfig::new(
            via.host.clone(),
            self.user.clone(),
            self.password.clone().unwrap_or_default(),
            self.database.clone(),
            slot,
            publication,
        )
        .with_port(via.port)
        .with_tls(TlsConfig::disabled())
        .with_options(options)
        .with_application_name("tributary")
        .with_buffer_size(LIBRARY_EVENTS)
        // The confirmed position reaches the server within a second (the slot's
        // confirmed_flush_lsn, which `tributary validate` waits on, and the WAL it frees).
        .with_status_interval(std::time::Duration::from_secs(1))
    }

    /// A replication error as a [`SourceError`] naming the endpoint and the fix.
    pub fn classify_replication(&self, e: PgWireError, context: &str) -> SourceError {
        let endpoint = self.name.clone();
        let message = e.to_string();
        if e.is_auth() || message.contains("28P01") || message.contains("password authentication") {
            return SourceError::Authentication {
                endpoint,
                user: self.user.clone(),
                hint: "Check the password, and that pg_hba.conf allows replication connections \
                       (host replication <user> <address> scram-sha-256)"
                    .into(),
            };
        }
        if e.is_io() {
            return SourceError::Unreachable {
                endpoint,
                host: self.host.clone(),
                port: self.port,
                reason: message,
            };
        }
        let fix = if message.contains("does not exist") && message.contains("slot") {
            " The replication slot is gone: run the task with --reload to load again and \
             recreate it (changes since the slot was dropped are lost to CDC)"
        } else if message.contains("must be superuser or replication role")
            || message.contains("permission denied to start WAL sender")
        {
            " Grant the user replication: ALTER ROLE <user> WITH REPLICATION"
        } else if message.contains("logical decoding requires wal_level") {
            " Set wal_level = logical in postgresql.conf and restart PostgreSQL"
        } else if message.contains("all replication slots are in use") {
            " Raise max_replication_slots, or drop unused slots (pg_drop_replication_slot)"
        } else {
            ""
        };
        SourceError::Database {
            endpoint,
            context: context.to_owned(),
            message: format!("{message}.{fix}"),
        }
    }

    pub async fn publication_exists(&self, publication: &str) -> Result<bool, SourceError> {
        let mut conn = self.connect().await?;
        self.publication_exists_on(&mut conn, publication).await
    }

    async fn publication_exists_on(
        &self,
        conn: &mut PgConnection,
        publication: &str,
    ) -> Result<bool, SourceError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(publication)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.classify(e, "looking up the publication"))
    }

    /// The task's publication: created `FOR ALL TABLES` if absent (tables are then picked by
    /// the task's selection rules, and new tables are captured as they appear).
    pub async fn ensure_publication(&self, publication: &str) -> Result<bool, SourceError> {
        let mut conn = self.connect().await?;
        if self.publication_exists_on(&mut conn, publication).await? {
            return Ok(false);
        }
        // Once a publication covers a table, PostgreSQL refuses UPDATE and DELETE on it
        // unless it has a replica identity: creating one FOR ALL TABLES would break the
        // application's writes to such tables.
        let unidentified: Vec<String> = sqlx::query_scalar(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%' \
               AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS \
                    (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) \
             ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| self.classify(e, "looking for tables without a replica identity"))?;
        if !unidentified.is_empty() {
            return Err(SourceError::Database {
                endpoint: self.name.clone(),
                context: format!("creating publication {publication}"),
                message: format!(
                    "a publication FOR ALL TABLES would make PostgreSQL refuse UPDATE and DELETE on tables without a replica identity: {}. Give each a primary key or run ALTER TABLE … REPLICA IDENTITY FULL, then run the task again",
                    unidentified.join(", ")
                ),
            });
        }
        let sql = format!(
            "CREATE PUBLICATION {} FOR ALL TABLES",
            quote_ident(publication)
        );
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
        created.map_err(|e| {
            match self.classify(e, &format!("creating publication {publication}")) {
                // Only a superuser may publish FOR ALL TABLES.
                SourceError::PermissionDenied {
                    endpoint,
                    context,
                    message,
                    ..
                } => SourceError::PermissionDenied {
                    endpoint,
                    context,
                    message,
                    fix: format!(
                        "A publication FOR ALL TABLES needs a superuser: have one create a publication of the task's tables (CREATE PUBLICATION {publication} FOR TABLE …), or set cdc_settings.publication_name to an existing one; the task checks that it publishes every table it selects"
                    ),
                },
                other => other,
            }
        })?;
        Ok(true)
    }

    /// Fails with the fix unless the server runs with `wal_level = logical`, before the task
    /// creates anything on it.
    pub async fn require_logical_wal(&self) -> Result<(), SourceError> {
        let mut conn = self.connect().await?;
        let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| self.classify(e, "reading wal_level"))?;
        if level == "logical" {
            return Ok(());
        }
        Err(SourceError::Database {
            endpoint: self.name.clone(),
            context: "checking wal_level".into(),
            message: format!(
                "wal_level is {level}, and CDC needs wal_level = logical. Run ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL"
            ),
        })
    }

    /// Of `tables`, those `publication` does not publish: their changes would never reach
    /// the stream. Empty for a publication FOR ALL TABLES.
    pub async fn unpublished(
        &self,
        publication: &str,
        tables: &[TableId],
    ) -> Result<Vec<TableId>, SourceError> {
        let mut conn = self.connect().await?;
        let published: Vec<(String, String)> = sqlx::query_as(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
        )
        .bind(publication)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| {
            self.classify(
                e,
                &format!("listing the tables of publication {publication}"),
            )
        })?;
        let published: std::collections::HashSet<TableId> = published
            .into_iter()
            .map(|(schema, table)| TableId::new(schema, table))
            .collect();
        Ok(tables
            .iter()
            .filter(|t| !published.contains(t))
            .cloned()
            .collect())
    }

    pub async fn slot_status(&self, slot: &str) -> Result<Option<SlotStatus>, SourceError> {
        let mut conn = self.connect().await?;
        self.slot_status_on(&mut conn, slot).await
    }

    pub async fn slot_status_on(
        &self,
        conn: &mut PgConnection,
        slot: &str,
    ) -> Result<Option<SlotStatus>, SourceError> {
        let row = sqlx::query(
            "SELECT plugin::text, database::text, confirmed_flush_lsn::text, \
             COALESCE(pg_current_wal_lsn() - restart_lsn, 0)::int8, active, \
             COALESCE(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::int8, \
             COALESCE(wal_status = 'lost', false) \
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.classify(e, "looking up the replication slot"))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e| self.classify(e, "reading the replication slot");
        Ok(Some(SlotStatus {
            plugin: row.try_get(0).map_err(get)?,
            database: row.try_get(1).map_err(get)?,
            confirmed_flush: row.try_get(2).map_err(get)?,
            retained_bytes: row.try_get(3).map_err(get)?,
            active: row.try_get(4).map_err(get)?,
            lag_bytes: row.try_get(5).map_err(get)?,
            lost: row.try_get(6).map_err(get)?,
        }))
    }

    /// Creates the slot on a replication connection and exports its snapshot. The returned
    /// holder must stay open, idle, until every reader has imported the snapshot. A
    /// temporary slot lives only as long as the holder: it is made just for its snapshot,
    /// whose position is exact.
    pub async fn create_slot_with_snapshot(
        &self,
        slot: &str,
        publication: &str,
        temporary: bool,
    ) -> Result<(SnapshotHolder, Snapshot), SourceError> {
        let context = format!("creating replication slot {slot}");
        let mut via = self.via().await?;
        let mut client =
            ReplicationClient::connect_gated(self.replication_config(slot, publication, &via))
                .await
                .map_err(|e| self.classify_replication(e, &context))?;
        let rows = client
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(slot),
                if temporary { " TEMPORARY" } else { "" }
            ))
            .await
            .map_err(|e| self.classify_replication(e, &context))?;
        let field = |i: usize| {
            rows.first()
                .and_then(|r| r.get(i))
                .and_then(|v| v.as_ref())
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
                .ok_or_else(|| SourceError::Database {
                    endpoint: self.name.clone(),
                    context: context.clone(),
                    message: "CREATE_REPLICATION_SLOT returned no slot".into(),
                })
        };
        let snapshot = Snapshot {
            position: Some(SourcePosition::Lsn(self.lsn(&context, &field(1)?)?)),
            id: field(2)?,
        };
        Ok((
            SnapshotHolder {
                client,
                relay_done: via.done.take(),
            },
            snapshot,
        ))
    }

    /// Task `task`'s replication slot here ([`TaskConfig::slot_name`]): the name it has had
    /// since before names carried the database, if a slot of that name is this database's.
    pub async fn task_slot(&self, task: &TaskConfig) -> Result<String, SourceError> {
        let legacy = task.legacy_slot_name();
        let legacy_is_its_own = task.cdc_settings.slot_name.is_empty()
            && self
                .slot_status(&legacy)
                .await?
                .is_some_and(|s| s.is_of(&self.database));
        Ok(task.slot_name(&self.database, legacy_is_its_own))
    }

    /// Drops `slot` if it is one of this endpoint's database: another database's slot of
    /// the same name (a cluster's slot names are shared) is left alone.
    pub async fn drop_slot(&self, slot: &str) -> Result<(), SourceError> {
        let mut conn = self.connect().await?;
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database()",
        )
        .bind(slot)
        .execute(&mut conn)
        .await
        .map_err(|e| self.classify(e, &format!("dropping replication slot {slot}")))?;
        Ok(())
    }

    pub async fn drop_publication(&self, publication: &str) -> Result<(), SourceError> {
        let mut conn = self.connect().await?;
        let sql = format!("DROP PUBLICATION IF EXISTS {}", quote_ident(publication));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| self.classify(e, &format!("dropping publication {publication}")))?;
        Ok(())
    }

    /// Streams the slot's changes from after `start` (0: from the slot's confirmed point).
    pub async fn stream(
        &self,
        slot: &str,
        publication: &str,
        start: u64,
    ) -> Result<ChangeStream, SourceError> {
        let mut via = self.via().await?;
        let config = self
            .replication_config(slot, publication, &via)
            .with_start_lsn(Lsn::from_u64(start));
        let client = ReplicationClient::connect(config)
            .await
            .map_err(|e| self.classify_replication(e, &format!("streaming slot {slot}")))?;
        let (events, queue) = mpsc::unbounded_channel();
        let (applied, confirmations) = watch::channel(0);
        let forwarder = tokio::spawn(forward(
            client,
            events,
            Arc::new(Semaphore::new(READ_AHEAD_BYTES)),
            confirmations,
        ));
        Ok(ChangeStream {
            queue,
            current: None,
            applied,
            forwarder,
            relay_done: via.done.take(),
            endpoint: self.clone(),
            slot: slot.to_owned(),
        })
    }

    /// Writes a heartbeat into the WAL (a non-transactional logical message, which the
    /// stream passes by), so a slot on an idle database can advance. Returns its position:
    /// every transaction committed before the call is before it in the stream.
    pub async fn heartbeat(&self, conn: &mut PgConnection) -> Result<u64, SourceError> {
        let text: String = sqlx::query_scalar(
            "SELECT pg_logical_emit_message(false, 'tributary.heartbeat', now()::text)::text",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.classify(e, "writing a heartbeat"))?;
        self.lsn("writing a heartbeat", &text)
    }

    /// Moves the slot's confirmed position to `position` (after the stream closed, since
    /// the stream's last status update may not have reached the server).
    pub async fn advance_slot(&self, slot: &str, position: u64) -> Result<(), SourceError> {
        let mut conn = self.connect().await?;
        sqlx::query(
            "SELECT pg_replication_slot_advance($1, $2::pg_lsn) FROM pg_replication_slots \
             WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn",
        )
        .bind(slot)
        .bind(format_lsn(position))
        .execute(&mut conn)
        .await
        .map_err(|e| self.classify(e, &format!("advancing slot {slot}")))?;
        Ok(())
    }
}

/// Keeps the replication connection that exported a snapshot open and idle.
pub struct SnapshotHolder {
    client: ReplicationClient,
    relay_done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl SnapshotHolder {
    /// Ends the connection and waits until the server has seen it end (a temporary slot
    /// is then gone). Dropping the holder ends it too, without waiting.
    pub async fn close(self) {
        let SnapshotHolder { client, relay_done } = self;
        // Dropping ends a gated session (its gate closes); `shutdown` would wait on it.
        drop(client);
        wait_relay(relay_done).await;
    }
}

/// Waits (bounded) until a relay's both sides have closed.
async fn wait_relay(done: Option<tokio::sync::oneshot::Receiver<()>>) {
    if let Some(done) = done {
        let _ = tokio::time::timeout(super::CONNECT_TIMEOUT, done).await;
    }
}

/// The slot's change stream: pgoutput messages in commit order, read ahead of the caller
/// by at most [`READ_AHEAD_BYTES`] (a task of its own, [`forward`], reads them).
pub struct ChangeStream {
    queue: mpsc::UnboundedReceiver<Received>,
    /// The chunk being taken.
    current: Option<Received>,
    /// The position the caller confirmed, passed on to the server by the forwarder.
    applied: watch::Sender<u64>,
    forwarder: tokio::task::JoinHandle<()>,
    /// The TLS relay's end, awaited on close so the server has released the slot.
    relay_done: Option<tokio::sync::oneshot::Receiver<()>>,
    endpoint: PgEndpoint,
    slot: String,
}

/// Events the forwarder passes on at once, at most: those the library already holds,
/// so that a busy stream pays one hop per chunk, not per event.
const CHUNK_EVENTS: usize = 256;

type Event = Result<Option<ReplicationEvent>, PgWireError>;

/// Messages read ahead, holding their share of the read-ahead budget until the last is
/// taken.
struct Received {
    events: std::collections::VecDeque<Event>,
    _budget: OwnedSemaphorePermit,
}

impl ChangeStream {
    /// The next event; `None` when the server ended the stream, and an error after that.
    pub async fn recv(&mut self) -> Result<Option<ReplicationEvent>, SourceError> {
        let event = loop {
            if let Some(event) = self.current.as_mut().and_then(|c| c.events.pop_front()) {
                break event;
            }
            // The chunk is taken: its budget goes back to the forwarder.
            self.current = self.queue.recv().await;
            if self.current.is_none() {
                return Err(SourceError::Database {
                    endpoint: self.endpoint.name.clone(),
                    context: format!("streaming slot {}", self.slot),
                    message: "the replication stream ended; run the task again to reconnect".into(),
                });
            }
        };
        event.map_err(|e| {
            self.endpoint
                .classify_replication(e, &format!("streaming slot {}", self.slot))
        })
    }

    /// Lets the server recycle WAL up to `position`: call only once everything before it
    /// is durable.
    pub fn confirm(&self, position: u64) {
        self.applied.send_if_modified(|applied| {
            let raised = position > *applied;
            *applied = (*applied).max(position);
            raised
        });
    }

    /// Ends the stream and waits until its connection is closed (the slot is then free).
    pub async fn close(self) {
        let ChangeStream {
            queue,
            applied,
            forwarder,
            relay_done,
            ..
        } = self;
        drop(applied);
        drop(queue);
        let _ = forwarder.await;
        wait_relay(relay_done).await;
    }
}

/// Reads the library's events into `events` while `budget` (bytes) has room, and passes the
/// caller's confirmations on. Ends, closing the connection, when the stream ends or fails
/// (that last event forwarded) or when the caller drops its end.
async fn forward(
    mut client: ReplicationClient,
    events: mpsc::UnboundedSender<Received>,
    budget: Arc<Semaphore>,
    mut confirmations: watch::Receiver<u64>,
) {
    /// Passes a raised confirmation on to the library; false once the caller is gone.
    fn apply(
        client: &ReplicationClient,
        changed: Result<(), watch::error::RecvError>,
        confirmations: &mut watch::Receiver<u64>,
    ) -> bool {
        if changed.is_err() {
            return false;
        }
        client.update_applied_lsn(Lsn::from_u64(*confirmations.borrow_and_update()));
        true
    }
    'stream: loop {
        let event = tokio::select! {
            event = client.recv() => event,
            changed = confirmations.changed() => {
                if apply(&client, changed, &mut confirmations) {
                    continue;
                }
                break;
            }
        };
        let mut last = !matches!(event, Ok(Some(_)));
        let mut bytes = event_bytes(&event);
        let mut chunk = std::collections::VecDeque::from([event]);
        // With it, the events the library already holds. Only while its worker runs: a
        // receive that finds the stream ended awaits the worker's result, which must not
        // be cut short.
        while !last
            && chunk.len() < CHUNK_EVENTS
            && bytes < READ_AHEAD_BYTES / 4
            && client.is_running()
        {
            let Some(event) = client.recv().now_or_never() else {
                break;
            };
            last = !matches!(event, Ok(Some(_)));
            bytes += event_bytes(&event);
            chunk.push_back(event);
        }
        // A chunk larger than the whole budget waits for all of it: it is alone.
        let share = bytes.clamp(1, READ_AHEAD_BYTES) as u32;
        let permit = loop {
            tokio::select! {
                permit = budget.clone().acquire_many_owned(share) => match permit {
                    Ok(permit) => break permit,
                    Err(_) => break 'stream,
                },
                changed = confirmations.changed() => {
                    if !apply(&client, changed, &mut confirmations) {
                        break 'stream;
                    }
                }
            }
        };
        let received = Received {
            events: chunk,
            _budget: permit,
        };
        if events.send(received).is_err() || last {
            break;
        }
    }
    let _ = client.shutdown().await;
}

/// The memory an event takes, for the read-ahead budget.
fn event_bytes(event: &Event) -> usize {
    const EVENT: usize = std::mem::size_of::<ReplicationEvent>();
    match event {
        Ok(Some(ReplicationEvent::XLogData { data, .. })) => EVENT + data.len(),
        Ok(Some(ReplicationEvent::Message {
            prefix, content, ..
        })) => EVENT + prefix.len() + content.len(),
        _ => EVENT,
    }
}
