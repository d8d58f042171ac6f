//! Reload requests from outside a running task (`tributary validate --repair`): one JSON
//! file per request in `<bucket_folder>/_tributary/<task>/requests/`, beside the task's
//! state, so a task running in another process (or on another machine) gets them.
//!
//! Invariants:
//! - a request is a new file, never an edit of the task's state, which only the running
//!   task writes;
//! - the CDC loop reads the requests every [`POLL`]; they become the task's own reload
//!   requests (recorded in its state with the next batch, as a schema change's are), and
//!   the files are deleted only after that state write: a crash in between reloads the
//!   tables once more, never loses the request;
//! - a request naming a table the task does not replicate is dropped with a warning when
//!   the reload runs ([`super::reload`]).

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ident::TableId;
use crate::lake::{Storage, StorageError, layout};

/// How often a running CDC task looks for requests.
pub(super) const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    tables: Vec<TableId>,
    /// Who asked, for people reading the folder.
    by: String,
}

fn folder(bucket_folder: &str, task: &str) -> String {
    format!(
        "{}requests/",
        layout::task_state_prefix(bucket_folder, task)
    )
}

/// Asks task `task` to reload `tables` from their own snapshot; returns the request's URI.
pub async fn request_reload(
    storage: &Storage,
    bucket_folder: &str,
    task: &str,
    tables: &[TableId],
    by: &str,
) -> Result<String, StorageError> {
    let key = format!(
        "{}reload-{}.json",
        folder(bucket_folder, task),
        uuid::Uuid::new_v4()
    );
    let request = Request {
        tables: tables.to_vec(),
        by: by.to_owned(),
    };
    let body = serde_json::to_vec_pretty(&request).map_err(|e| StorageError::Io {
        op: "encoding the reload request",
        path: key.clone().into(),
        source: std::io::Error::other(e),
    })?;
    storage.put_bytes(&key, Bytes::from(body)).await?;
    Ok(storage.uri(&key))
}

/// The requests waiting: each file's key and the tables it names. A file that does not
/// parse (written by hand) is named in the warning returned, and left alone.
pub(super) async fn pending(
    storage: &Storage,
    bucket_folder: &str,
    task: &str,
) -> Result<(Vec<(String, Vec<TableId>)>, Vec<String>), StorageError> {
    let mut requests = Vec::new();
    let mut warnings = Vec::new();
    for object in storage.list_all(&folder(bucket_folder, task)).await? {
        if !object.key.ends_with(".json") {
            continue;
        }
        let Some(bytes) = storage.get_bytes(&object.key).await? else {
            continue;
        };
        match serde_json::from_slice::<Request>(&bytes) {
            Ok(request) => requests.push((object.key, request.tables)),
            Err(e) => warnings.push(format!(
                "{} is not a reload request ({e}); it is ignored. Delete it",
                storage.uri(&object.key)
            )),
        }
    }
    Ok((requests, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_read_back_and_a_stray_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path());
        let tables = [TableId::new("public", "a.b"), TableId::new("s", "t")];
        let uri = request_reload(&storage, "raw", "cdc", &tables, "test")
            .await
            .unwrap();
        assert!(uri.contains("raw/_tributary/cdc/requests/reload-"), "{uri}");
        storage
            .put_bytes("raw/_tributary/cdc/requests/x.json", Bytes::from("{"))
            .await
            .unwrap();
        let (requests, warnings) = pending(&storage, "raw", "cdc").await.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].1, tables);
        assert!(warnings[0].contains("x.json"), "{warnings:?}");
        assert!(
            pending(&storage, "raw", "other")
                .await
                .unwrap()
                .0
                .is_empty()
        );
    }
}
