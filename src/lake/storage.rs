//! Where lake files live: a local folder or an S3-compatible bucket, behind one API.
//!
//! Invariants:
//! - a file appears under its final key complete or not at all: locally it is written under
//!   a temporary name in the same filesystem, fsynced, then renamed (and the folder fsynced);
//!   on S3 an object (or a completed multipart upload) is atomic;
//! - keys are `/`-separated and relative to the target's root, whatever the platform;
//! - errors name the file or bucket and say how to fix the usual causes (missing bucket,
//!   access denied, full disk).

use std::ops::Range;
use std::path::{Path, PathBuf};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;

use super::durable::{self, DurableError};
use crate::check::CheckResult;
use crate::config::{EndpointConfig, Engine};

/// Files above this size go up in parts; S3 needs parts of at least 5 MB.
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Local folder, below a local target's root, for files being written. Readers (pyarrow,
/// Spark, Glue) skip names starting with `.` or `_`.
const LOCAL_TMP_DIR: &str = ".tributary-tmp";
/// The spool folder of S3 targets, in the system's temporary folder (`TMPDIR`), followed by
/// the user's id: each user has their own.
const S3_SPOOL_DIR: &str = "tributary-spool-";
/// Spool names of [`Storage::put_bytes`]; followed by [`unique_suffix`], which starts with the
/// writer's process id, so that [`Storage::clean_spool`] can tell a killed writer's file.
pub(crate) const PUT_PREFIX: &str = "put-";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "bucket '{bucket}' does not exist{at}. Create it (aws s3 mb s3://{bucket}) or fix `bucket` in the target endpoint"
    )]
    NoSuchBucket { bucket: String, at: String },
    #[error(
        "access denied to {uri} ({message}). Check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, the endpoint's `profile`) and the bucket policy"
    )]
    AccessDenied { uri: String, message: String },
    #[error(
        "no credentials for {uri}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the endpoint's `profile`"
    )]
    NoCredentials { uri: String },
    #[error("{uri} not found")]
    NotFound { uri: String },
    #[error(
        "no space left on the device writing {path}. Free space there or choose another target"
    )]
    DiskFull { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {uri}: {message}")]
    S3 {
        op: &'static str,
        uri: String,
        message: String,
    },
    /// Bytes that failed on their way, after the request itself succeeded.
    #[error("{op} {uri}: {source}")]
    Transfer {
        op: &'static str,
        uri: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("'{uri}' is not a local path or an s3://bucket/prefix URI")]
    InvalidUri { uri: String },
    #[error(
        "refusing the key '{key}' in {root}: {reason}. Nothing was read, written or deleted; a key must stay inside the target (this is a hostile name or a bug, please report it)"
    )]
    UnsafeKey {
        root: String,
        key: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    #[error("unsafe spool folder: {source}. {fix}")]
    UnsafeSpool {
        #[source]
        source: DurableError,
        fix: &'static str,
    },
}

impl StorageError {
    fn durable(e: DurableError, fix: &'static str) -> Self {
        match e {
            DurableError::Io { op, path, source } => StorageError::io(op, &path, source),
            other => StorageError::UnsafeSpool { source: other, fix },
        }
    }

    fn transfer(
        op: &'static str,
        uri: String,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError::Transfer {
            op,
            uri,
            source: Box::new(source),
        }
    }

    fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        // ENOSPC (28) and EDQUOT (122): the disk or the user's quota is full.
        if matches!(source.raw_os_error(), Some(28) | Some(122)) {
            StorageError::DiskFull {
                path: path.to_owned(),
            }
        } else if source.kind() == std::io::ErrorKind::NotFound && op == "reading" {
            StorageError::NotFound {
                uri: path.display().to_string(),
            }
        } else {
            StorageError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// An object (file) in a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// One page of a listing: objects and, with a delimiter, the common prefixes ("folders").
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub prefixes: Vec<String>,
    /// Pass back to get the next page; `None` on the last page.
    pub next: Option<String>,
}

#[derive(Clone)]
pub enum Storage {
    Local(LocalStorage),
    S3(S3Storage),
}

#[derive(Clone, Debug)]
pub struct LocalStorage {
    root: PathBuf,
}

#[derive(Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    endpoint_url: Option<String>,
}

/// S3 connection settings, from a target endpoint or from command-line flags.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    pub profile: Option<String>,
    /// PEM certificates trusted instead of the system's ([`crate::aws`]).
    pub ca_bundle: Option<PathBuf>,
}

impl Storage {
    pub async fn from_endpoint(e: &EndpointConfig) -> Result<Storage, StorageError> {
        match e.engine {
            Engine::Local => Ok(Storage::local(e.path.clone().unwrap_or_default())),
            Engine::S3 => {
                Storage::s3(S3Options {
                    bucket: e.bucket.clone().unwrap_or_default(),
                    region: e.region.clone(),
                    endpoint_url: e.endpoint_url.clone(),
                    force_path_style: e.force_path_style.unwrap_or(false),
                    profile: e.profile.clone(),
                    ca_bundle: e.ca_bundle.clone(),
                })
                .await
            }
            // Every other engine is a source database.
            _ => Err(StorageError::InvalidUri {
                uri: format!("endpoint '{}' (a source, not a target)", e.name),
            }),
        }
    }

    pub fn local(root: impl Into<PathBuf>) -> Storage {
        Storage::Local(LocalStorage { root: root.into() })
    }

    pub async fn s3(o: S3Options) -> Result<Storage, StorageError> {
        let shared = crate::aws::sdk_config(&crate::aws::AwsOptions {
            region: o.region.clone(),
            profile: o.profile.clone(),
            ca_bundle: o.ca_bundle.clone(),
        })
        .await?;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(o.force_path_style);
        if shared.region().is_none() {
            // S3-compatible servers ignore the region but the signer needs one.
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(url) = &o.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let endpoint_url = o
            .endpoint_url
            .clone()
            .or_else(|| shared.endpoint_url().map(str::to_owned));
        Ok(Storage::S3(S3Storage {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: o.bucket,
            // Only shown in messages: never with credentials.
            endpoint_url: endpoint_url.map(|u| crate::secret::redact_url(&u)),
        }))
    }

    /// Parses `s3://bucket/prefix` or a local path into a storage and a key prefix.
    pub async fn from_uri(uri: &str, s3: S3Options) -> Result<(Storage, String), StorageError> {
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StorageError::InvalidUri { uri: uri.into() });
            }
            let storage = Storage::s3(S3Options {
                bucket: bucket.into(),
                ..s3
            })
            .await?;
            Ok((storage, prefix.into()))
        } else if uri.contains("://") {
            Err(StorageError::InvalidUri { uri: uri.into() })
        } else {
            let path = Path::new(uri);
            if path.is_dir() {
                Ok((Storage::local(path), String::new()))
            } else {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok((Storage::local(parent), name))
            }
        }
    }

    /// The bucket of an S3 storage.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Storage::Local(_) => None,
            Storage::S3(s) => Some(&s.bucket),
        }
    }

    /// The target's root, as a user would write it.
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(l) => l.root.display().to_string(),
            Storage::S3(s) => format!("s3://{}", s.bucket),
        }
    }

    pub fn uri(&self, key: &str) -> String {
        match self {
            Storage::Local(l) => l.root.join(key).display().to_string(),
            Storage::S3(s) => format!("s3://{}/{key}", s.bucket),
        }
    }

    /// Refuses a key that could reach outside the target ([`unsafe_key`]).
    fn checked<'k>(&self, key: &'k str) -> Result<&'k str, StorageError> {
        match unsafe_key(key) {
            None => Ok(key),
            Some(reason) => Err(StorageError::UnsafeKey {
                root: self.describe(),
                key: key.to_owned(),
                reason,
            }),
        }
    }

    /// The key of `uri` (as [`Self::uri`] makes them; local ones also as `file:` URIs), or
    /// `None` when it is not in this storage.
    pub fn key_of(&self, uri: &str) -> Option<String> {
        match self {
            Storage::Local(l) => {
                let path = uri
                    .strip_prefix("file://")
                    .or_else(|| uri.strip_prefix("file:"))
                    .unwrap_or(uri);
                let path = Path::new("/").join(path.trim_start_matches('/'));
                let key = path.strip_prefix(&l.root).ok()?;
                Some(key.to_string_lossy().into_owned())
            }
            Storage::S3(s) => uri
                .strip_prefix(&format!("s3://{}/", s.bucket))
                .map(str::to_owned),
        }
    }

    /// Folder for files being written before they are put: on the target's filesystem for a
    /// local target (`<root>/.tributary-tmp`, so the put is a rename), else this user's own
    /// folder in the system's temporary folder (`$TMPDIR/tributary-spool-<uid>`). Either is
    /// private ([`durable::private_dir`]: this user's, mode 0700; a wider one of ours is
    /// narrowed, another user's is refused), and files in it are created 0600
    /// ([`durable::create_private`]) under unpredictable names.
    pub fn spool_dir(&self) -> Result<PathBuf, StorageError> {
        let (dir, fix) = match self {
            Storage::Local(l) => (
                l.root.join(LOCAL_TMP_DIR),
                "Remove it (as its owner, or root): tributary makes it again",
            ),
            Storage::S3(_) => (
                std::env::temp_dir().join(format!(
                    "{S3_SPOOL_DIR}{}",
                    // SAFETY: geteuid has no preconditions and cannot fail.
                    unsafe { libc::geteuid() }
                )),
                "Remove it (as its owner, or root), or set TMPDIR to a folder of your own",
            ),
        };
        durable::private_dir(&dir).map_err(|e| StorageError::durable(e, fix))?;
        Ok(dir)
    }

    /// Moves a finished local file to `key`. The file must be fsynced by its writer.
    pub async fn put_file(&self, local: &Path, key: &str) -> Result<(), StorageError> {
        self.checked(key)?;
        match self {
            Storage::Local(l) => l.rename_into(local, key).await,
            Storage::S3(s) => {
                let result = s.upload(local, key).await;
                let _ = tokio::fs::remove_file(local).await;
                result
            }
        }
    }

    /// Writes a small object atomically (task state, markers).
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.checked(key)?;
        match self {
            Storage::Local(l) => {
                let spool = self.spool_dir()?;
                let tmp = spool.join(format!("{PUT_PREFIX}{}.tmp", unique_suffix()));
                let path = tmp.clone();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    use std::io::Write;
                    let mut f = durable::create_private(&path)?;
                    f.write_all(&data)?;
                    f.sync_all()
                })
                .await
                .map_err(|e| StorageError::io("writing", &tmp, std::io::Error::other(e)))?
                .map_err(|e| StorageError::io("writing", &tmp, e))?;
                l.rename_into(&tmp, key).await
            }
            Storage::S3(s) => s
                .client
                .put_object()
                .bucket(&s.bucket)
                .key(key)
                .body(ByteStream::from(data))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s.error("writing", key, e)),
        }
    }

    /// Reads a whole (small) object; `None` when it does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        self.checked(key)?;
        match self {
            Storage::Local(l) => {
                let path = l.path(key);
                match tokio::fs::read(&path).await {
                    Ok(b) => Ok(Some(b.into())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(StorageError::io("reading", &path, e)),
                }
            }
            Storage::S3(s) => {
                let out = s
                    .client
                    .get_object()
                    .bucket(&s.bucket)
                    .key(key)
                    .send()
                    .await;
                match out {
                    Ok(o) => o
                        .body
                        .collect()
                        .await
                        .map(|b| Some(b.into_bytes()))
                        .map_err(|e| StorageError::transfer("reading", self.uri(key), e)),
                    Err(e) => match s.error("reading", key, e) {
                        StorageError::NotFound { .. } => Ok(None),
                        other => Err(other),
                    },
                }
            }
        }
    }

    /// Reads `range` (bytes) of an object, for Parquet footers and row groups.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.checked(key)?;
        match self {
            Storage::Local(l) => {
                let path = l.path(key);
                let read = async {
                    use tokio::io::AsyncSeekExt;
                    let mut f = tokio::fs::File::open(&path).await?;
                    f.seek(std::io::SeekFrom::Start(range.start)).await?;
                    let mut buf = vec![0u8; (range.end - range.start) as usize];
                    f.read_exact(&mut buf).await?;
                    Ok::<_, std::io::Error>(Bytes::from(buf))
                };
                read.await
                    .map_err(|e| StorageError::io("reading", &path, e))
            }
            Storage::S3(s) => {
                if range.is_empty() {
                    return Ok(Bytes::new());
                }
                let o = s
                    .client
                    .get_object()
                    .bucket(&s.bucket)
                    .key(key)
                    .range(format!("bytes={}-{}", range.start, range.end - 1))
                    .send()
                    .await
                    .map_err(|e| s.error("reading", key, e))?;
                o.body
                    .collect()
                    .await
                    .map(|b| b.into_bytes())
                    .map_err(|e| StorageError::transfer("reading", self.uri(key), e))
            }
        }
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.checked(key)?;
        match self {
            Storage::Local(l) => {
                let path = l.path(key);
                let m = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| StorageError::io("reading", &path, e))?;
                Ok(ObjectMeta {
                    key: key.into(),
                    size: m.len(),
                    last_modified: m.modified().ok().map(DateTime::<Utc>::from),
                })
            }
            Storage::S3(s) => {
                let o = s
                    .client
                    .head_object()
                    .bucket(&s.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| s.error("reading", key, e))?;
                Ok(ObjectMeta {
                    key: key.into(),
                    size: o.content_length().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().and_then(s3_time),
                })
            }
        }
    }

    /// One page of the objects under `prefix`. With `delimited`, only the objects directly
    /// under it, and the sub-folders as `prefixes` (like `aws s3 ls`).
    pub async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        continuation: Option<String>,
    ) -> Result<ListPage, StorageError> {
        self.checked(prefix)?;
        match self {
            Storage::Local(l) => {
                let l = l.clone();
                let prefix = prefix.to_owned();
                tokio::task::spawn_blocking(move || l.list(&prefix, delimited))
                    .await
                    .map_err(|e| {
                        StorageError::io("listing", Path::new(""), std::io::Error::other(e))
                    })?
            }
            Storage::S3(s) => {
                let mut req = s.client.list_objects_v2().bucket(&s.bucket).prefix(prefix);
                if delimited {
                    req = req.delimiter("/");
                }
                if let Some(token) = continuation {
                    req = req.continuation_token(token);
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| s.error("listing", prefix, e))?;
                Ok(ListPage {
                    objects: out
                        .contents()
                        .iter()
                        .map(|o| ObjectMeta {
                            key: o.key().unwrap_or_default().to_owned(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            last_modified: o.last_modified().and_then(s3_time),
                        })
                        .collect(),
                    prefixes: out
                        .common_prefixes()
                        .iter()
                        .filter_map(|p| p.prefix().map(str::to_owned))
                        .collect(),
                    next: out.next_continuation_token().map(str::to_owned),
                })
            }
        }
    }

    /// Every object under `prefix`, all pages. For task folders, not for browsing.
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let page = self.list_page(prefix, false, token).await?;
            all.extend(page.objects);
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.checked(key)?;
        match self {
            Storage::Local(l) => {
                let path = l.path(key);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(StorageError::io("deleting", &path, e)),
                }
            }
            Storage::S3(s) => s
                .client
                .delete_object()
                .bucket(&s.bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s.error("deleting", key, e)),
        }
    }

    /// Removes the spool files a killed run of `task` left ([`spool_name`]), and the
    /// small-object files ([`Self::put_bytes`]) of processes that no longer run. Files of
    /// a process that runs (another run of the task, refused a moment later; another task)
    /// are left alone.
    pub fn clean_spool(&self, task: &str) {
        let Ok(dir) = self.spool_dir() else { return };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_leftover(&name, task, process_is_running) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Checks the target is reachable and writable, by writing and deleting a probe object.
    pub async fn check(&self) -> Vec<CheckResult> {
        let key = format!(".tributary-check-{}", unique_suffix());
        if let Storage::Local(l) = self
            && let Err(e) = std::fs::create_dir_all(&l.root)
        {
            return vec![CheckResult::fail_from(
                "writable",
                &StorageError::io("creating folder", &l.root, e),
            )];
        }
        match self.put_bytes(&key, Bytes::from_static(b"probe")).await {
            Ok(()) => {
                let _ = self.delete(&key).await;
                vec![CheckResult::pass(
                    "writable",
                    format!("{} is writable", self.describe()),
                )]
            }
            Err(e) => vec![CheckResult::fail_from("writable", &e)],
        }
    }
}

impl LocalStorage {
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn rename_into(&self, local: &Path, key: &str) -> Result<(), StorageError> {
        let dest = self.path(key);
        let local = local.to_owned();
        tokio::task::spawn_blocking(move || {
            let parent = dest.parent().unwrap_or(Path::new("."));
            durable::create_dir_all(parent).map_err(|e| StorageError::durable(e, ""))?;
            // Spool files are private (0600); the lake's get the default mode.
            std::fs::set_permissions(
                &local,
                std::os::unix::fs::PermissionsExt::from_mode(durable::default_file_mode()),
            )
            .map_err(|e| StorageError::io("setting permissions of", &local, e))?;
            std::fs::rename(&local, &dest)
                .map_err(|e| StorageError::io("renaming into", &dest, e))?;
            // Make the rename itself durable.
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io("syncing folder", parent, e))
        })
        .await
        .map_err(|e| StorageError::io("renaming", Path::new(key), std::io::Error::other(e)))?
    }

    /// Local listing, sorted by key; one page (local folders are cheap to read whole).
    fn list(&self, prefix: &str, delimited: bool) -> Result<ListPage, StorageError> {
        // The folder to read: the prefix up to its last '/'.
        let (dir_key, name_start) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let dir = if dir_key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_key)
        };
        let mut page = ListPage::default();
        let mut stack = vec![(dir, dir_key.to_owned())];
        let mut first = true;
        while let Some((dir, key)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("listing", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io("listing", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if first && !name.starts_with(name_start) {
                    continue;
                }
                if name == LOCAL_TMP_DIR && key.is_empty() {
                    continue;
                }
                let child_key = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}/{name}")
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| StorageError::io("listing", &entry.path(), e))?;
                if meta.is_dir() {
                    if delimited {
                        page.prefixes.push(format!("{child_key}/"));
                    } else {
                        stack.push((entry.path(), child_key));
                    }
                } else {
                    page.objects.push(ObjectMeta {
                        key: child_key,
                        size: meta.len(),
                        last_modified: meta.modified().ok().map(DateTime::<Utc>::from),
                    });
                }
            }
            first = false;
        }
        page.objects.sort_by(|a, b| a.key.cmp(&b.key));
        page.prefixes.sort();
        Ok(page)
    }
}

impl S3Storage {
    fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn error<E, R>(&self, op: &'static str, key: &str, e: SdkError<E, R>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let uri = self.uri(key);
        let code = e.code().unwrap_or_default().to_owned();
        let message = e.message().unwrap_or_default().to_owned();
        let status = match &e {
            SdkError::ServiceError(s) => Some(format!("{:?}", s.raw())),
            _ => None,
        };
        match code.as_str() {
            "NoSuchBucket" => StorageError::NoSuchBucket {
                bucket: self.bucket.clone(),
                at: self
                    .endpoint_url
                    .as_ref()
                    .map(|u| format!(" at {u}"))
                    .unwrap_or_default(),
            },
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AllAccessDisabled" => StorageError::AccessDenied {
                uri,
                message: format!("{code}: {message}"),
            },
            "NoSuchKey" | "NotFound" => StorageError::NotFound { uri },
            _ => {
                if status
                    .as_deref()
                    .is_some_and(|s| s.contains("StatusCode(404)") || s.contains("status: 404"))
                {
                    return StorageError::NotFound { uri };
                }
                if status.as_deref().is_some_and(|s| s.contains("403")) {
                    return StorageError::AccessDenied {
                        uri,
                        message: "HTTP 403".into(),
                    };
                }
                use crate::aws::Undelivered;
                let at = self
                    .endpoint_url
                    .as_ref()
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default();
                let text = match crate::aws::undelivered(&e) {
                    Some(Undelivered::NoCredentials) => {
                        return StorageError::NoCredentials { uri };
                    }
                    Some(Undelivered::Certificate(problem)) => format!(
                        "the S3 endpoint{at} failed TLS verification: its certificate is \
                         {problem}. If a private CA signed it, set ca_bundle in the target \
                         endpoint to that CA's PEM file"
                    ),
                    Some(Undelivered::Unreachable(detail)) => {
                        format!("cannot reach the S3 endpoint{at}: {detail}")
                    }
                    Some(Undelivered::Unbuilt(detail)) => detail,
                    Some(Undelivered::TimedOut) => "timed out".into(),
                    None if !code.is_empty() => format!("{code}: {message}"),
                    None => format!("{e:?}"),
                };
                StorageError::S3 {
                    op,
                    uri,
                    message: text,
                }
            }
        }
    }

    async fn upload(&self, local: &Path, key: &str) -> Result<(), StorageError> {
        let size = tokio::fs::metadata(local)
            .await
            .map_err(|e| StorageError::io("reading", local, e))?
            .len();
        if size < MULTIPART_THRESHOLD {
            let body = ByteStream::from_path(local)
                .await
                .map_err(|e| StorageError::transfer("reading", local.display().to_string(), e))?;
            return self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error("writing", key, e));
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("writing", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(local, key, &upload_id).await;
        if result.is_err() {
            // An unfinished multipart upload is invisible but costs storage: abort it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        local: &Path,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| StorageError::io("reading", local, e))?;
        let mut parts = Vec::new();
        let mut number = 1;
        loop {
            let mut buf = Vec::with_capacity(PART_SIZE);
            let read = (&mut file)
                .take(PART_SIZE as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| StorageError::io("reading", local, e))?;
            if read == 0 {
                break;
            }
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| self.error("writing", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("writing", key, e))
    }
}

fn s3_time(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Whether a process with this id runs (on Unix; elsewhere assumed, so nothing in use is removed).
fn process_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // Signal 0 checks existence only; EPERM means it exists under another user.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Why `key` could reach outside the target's root, if it could: an absolute path, a
/// `.` or `..` segment, a backslash (a separator elsewhere) or NUL. Every operation checks
/// its key, whatever computed it. An empty key or a trailing `/` (the root, a folder to list)
/// is fine.
pub fn unsafe_key(key: &str) -> Option<&'static str> {
    if key.starts_with('/') {
        Some("it is an absolute path")
    } else if key.contains(['\\', '\0']) {
        Some("it holds a backslash or NUL")
    } else if key.split('/').any(|s| s == ".." || s == ".") {
        Some("it has a '.' or '..' segment")
    } else {
        None
    }
}

/// Whether the spool file `name` is one [`Storage::clean_spool`] of `task` removes:
/// - `put-<pid>-…` ([`Storage::put_bytes`], the FileIO's S3 writes) whose process is gone;
/// - a rolling writer's file of `task` (`<task>-…`, see [`super::format::spool_file_name`])
///   whose writer is gone or is this process (a run of it before this one); one whose writer
///   is another process that runs is left alone (another task named `<task>-x`). A name whose
///   writer cannot be read (written by an older version) goes by its prefix alone.
fn is_leftover(name: &str, task: &str, running: impl Fn(u32) -> bool) -> bool {
    if let Some(rest) = name.strip_prefix(PUT_PREFIX) {
        return rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !running(pid));
    }
    if !name.starts_with(&super::format::spool_prefix(&format!("{task}-"))) {
        return false;
    }
    match super::format::spool_writer(name) {
        Some(pid) => pid == std::process::id() || !running(pid),
        None => true,
    }
}

/// `<pid>-<random>`: unique across processes and within one, and unpredictable (a UUID v4),
/// so no other user can guess a spool file's name.
pub fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_list_range_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::local(dir.path());
        storage
            .put_bytes("raw/a/x.txt", Bytes::from_static(b"hello world"))
            .await
            .expect("put");
        storage
            .put_bytes("raw/b.txt", Bytes::from_static(b"b"))
            .await
            .expect("put");
        let all = storage.list_all("raw/").await.expect("list");
        let keys: Vec<_> = all.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["raw/a/x.txt", "raw/b.txt"], "spool folder is hidden");
        let page = storage.list_page("raw/", true, None).await.expect("list");
        assert_eq!(page.prefixes, ["raw/a/"]);
        assert_eq!(page.objects.len(), 1);
        assert_eq!(
            storage
                .get_range("raw/a/x.txt", 6..11)
                .await
                .expect("range"),
            "world"
        );
        storage.delete("raw/a/x.txt").await.expect("delete");
        assert_eq!(storage.get_bytes("raw/a/x.txt").await.expect("get"), None);
        assert!(matches!(
            storage.head("nope").await,
            Err(StorageError::NotFound { .. })
        ));
    }

    #[test]
    fn clean_spool_removes_killed_writers_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::local(dir.path());
        let spool = storage.spool_dir().expect("spool");
        let dead_pid = i32::MAX as u32; // above any pid_max
        let own = std::process::id();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let writer = |prefix: &str, pid: u32| {
            super::super::format::spool_file_name(prefix, pid, &random, 1, "parquet")
        };
        let removed = [
            format!("{PUT_PREFIX}{dead_pid}-1-0.tmp"),
            // Written before writers named themselves: by its prefix alone.
            "load-public.t-1.parquet".to_owned(),
            writer("load-public.t", dead_pid),
            // A run of the task before this one, in this process.
            writer("load-public.t", own),
            // Another task's, whose writer is gone: garbage whoever removes it.
            writer("load-cdc-cdc-public.t", dead_pid),
        ];
        let kept = [
            format!("{PUT_PREFIX}{}.tmp", unique_suffix()),
            "other-public.t-1.parquet".to_owned(),
            writer("other-public.t", dead_pid),
            // Task `load-cdc`'s, written by a process that runs (pid 1 always does).
            writer("load-cdc-cdc-public.t", 1),
        ];
        for name in removed.iter().chain(&kept) {
            std::fs::write(spool.join(name), b"x").expect("write");
        }
        storage.clean_spool("load");
        let mut left: Vec<_> = std::fs::read_dir(&spool)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = kept.to_vec();
        expected.sort();
        assert_eq!(
            left, expected,
            "a running process's files and other tasks' files stay"
        );
    }

    #[test]
    fn keys_that_could_leave_the_root_are_refused() {
        for bad in [
            "/etc/passwd",
            "raw/../x",
            "..",
            "./x",
            "a/./b",
            "a\\b",
            "a\0b",
        ] {
            assert!(unsafe_key(bad).is_some(), "{bad}");
        }
        for good in [
            "",
            "raw/",
            "raw/s/p/%2E./LOAD00000001.parquet",
            "a..b/.x/_y",
        ] {
            assert_eq!(unsafe_key(good), None, "{good}");
        }
    }

    #[tokio::test]
    async fn every_operation_refuses_an_unsafe_key() {
        let parent = tempfile::tempdir().expect("tempdir");
        let root = parent.path().join("lake");
        let storage = Storage::local(&root);
        let outside = parent.path().join("outside.txt");
        std::fs::write(&outside, b"keep").expect("write");
        let unsafe_key =
            |e: Result<(), StorageError>| matches!(e, Err(StorageError::UnsafeKey { .. }));
        assert!(unsafe_key(storage.delete("../outside.txt").await));
        assert!(unsafe_key(
            storage
                .put_bytes("../outside.txt", Bytes::from_static(b"x"))
                .await
        ));
        assert!(unsafe_key(
            storage.get_bytes("../outside.txt").await.map(|_| ())
        ));
        assert!(unsafe_key(storage.list_all("../").await.map(|_| ())));
        assert!(unsafe_key(storage.delete(&outside.to_string_lossy()).await));
        assert_eq!(std::fs::read(&outside).expect("read"), b"keep");
    }

    #[test]
    fn spool_folders_are_private_and_per_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::local(dir.path().join("lake"));
        let spool = storage.spool_dir().expect("spool");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool), 0o700);
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(storage.spool_dir().expect("spool"), spool);
        assert_eq!(mode(&spool), 0o700, "narrowed again");

        // put_bytes' spool file is private; the lake's file has the default mode.
        let probe = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(storage.put_bytes("raw/x.json", Bytes::from_static(b"{}")));
        probe.expect("put");
        let published = dir.path().join("lake/raw/x.json");
        assert_eq!(mode(&published), durable::default_file_mode());

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&spool, Some(65534), Some(65534)).unwrap();
            let err = storage.spool_dir().unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StorageError::UnsafeSpool { .. }), "{text}");
            assert!(
                text.contains("65534") && text.contains("Remove it"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn s3_targets_spool_in_a_private_folder_of_the_user() {
        use std::os::unix::fs::PermissionsExt;
        let storage = Storage::s3(S3Options {
            bucket: "b".into(),
            region: Some("us-east-1".into()),
            ..Default::default()
        })
        .await
        .expect("no ca_bundle to read");
        let spool = storage.spool_dir().expect("spool");
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            spool,
            std::env::temp_dir().join(format!("tributary-spool-{uid}"))
        );
        let mode = std::fs::metadata(&spool).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
