//! The lake's S3 buckets as the curated layer's engines see storage: an iceberg-rust
//! [`FileIO`] (table metadata, manifests, data files) and DataFusion object stores (the
//! merge's and the queries' reads), both over the [`Storage`] the raw zone writes with. So
//! an S3 target's endpoint, region, profile and credential chain are configured once, in
//! its endpoint, and no second S3 client (with its own build cost) is in the tree.
//!
//! Invariants:
//! - locations are URIs: `s3://bucket/key` for a bucket of [`Buckets`], a local path (or
//!   `file:` URI) otherwise, which iceberg-rust's local storage serves;
//! - a file written through the FileIO appears complete or not at all, and is durable when
//!   its write or close returns (so before any catalog commit points at it): an S3 file is
//!   spooled to a private local file and put (as one object or a multipart upload) when
//!   closed; a local file is written beside its path, fsynced, renamed into place and its
//!   folder fsynced ([`super::durable`]; iceberg-rust's own local storage does neither);
//! - the DataFusion store reads; it lists and deletes, but never writes (DataFusion writes
//!   only local scratch files here).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{
    self, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use datafusion::prelude::SessionContext;
use futures::stream::{self, BoxStream, StreamExt};
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorage,
    OutputFile, Storage as IcebergStorage, StorageConfig, StorageFactory,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::durable::{self, AtomicFile, DurableError};
use super::storage::{PUT_PREFIX, Storage, StorageError, unique_suffix};

/// S3 buckets by name, each with the storage (client and settings) of the target that names it.
#[derive(Clone, Default)]
pub struct Buckets(Arc<HashMap<String, Storage>>);

impl Buckets {
    /// The buckets of `storages`; local storages are left out (local paths need none).
    pub fn new(storages: impl IntoIterator<Item = Storage>) -> Buckets {
        let map = storages
            .into_iter()
            .filter_map(|s| Some((s.bucket()?.to_owned(), s)))
            .collect();
        Buckets(Arc::new(map))
    }

    /// The storage of `bucket`, if it is one of these.
    pub fn get(&self, bucket: &str) -> Option<Storage> {
        self.0.get(bucket).cloned()
    }

    /// A FileIO that reads and writes these buckets, and local paths.
    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(Arc::new(LakeStorageFactory {
            buckets: self.clone(),
        }))
        .build()
    }

    /// Registers each bucket as `s3://<bucket>` in the session, for its reads of S3 files.
    pub fn register(&self, ctx: &SessionContext) -> Result<(), datafusion::error::DataFusionError> {
        for (bucket, storage) in self.0.iter() {
            let url = url::Url::parse(&format!("s3://{bucket}"))
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            ctx.register_object_store(
                &url,
                Arc::new(LakeObjectStore {
                    storage: storage.clone(),
                }),
            );
        }
        Ok(())
    }

    /// The storage and key of an `s3://bucket/key` location; `None` for a local path.
    fn resolve(&self, location: &str) -> iceberg::Result<Option<(&Storage, String)>> {
        let Some(rest) = location.strip_prefix("s3://") else {
            return Ok(None);
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        match self.0.get(bucket) {
            Some(storage) => Ok(Some((storage, key.to_owned()))),
            None => Err(iceberg::Error::new(
                iceberg::ErrorKind::DataInvalid,
                format!(
                    "{location} is in bucket '{bucket}', which no target endpoint of the workspace names; add an S3 target for it"
                ),
            )),
        }
    }
}

impl fmt::Debug for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

fn iceberg_error(e: StorageError) -> iceberg::Error {
    let kind = match e {
        StorageError::NotFound { .. } => iceberg::ErrorKind::DataInvalid,
        _ => iceberg::ErrorKind::Unexpected,
    };
    iceberg::Error::new(kind, e.to_string())
}

fn durable_error(e: DurableError) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::Unexpected, "writing a local file").with_source(e)
}

fn join_error(e: tokio::task::JoinError) -> iceberg::Error {
    iceberg::Error::new(
        iceberg::ErrorKind::Unexpected,
        format!("a local write failed: {e}"),
    )
}

/// A location's local path, as iceberg-rust's local storage reads it: `file:///p`,
/// `file://p`, `file:/p` and `/p` are all `/p`.
fn local_path(location: &str) -> PathBuf {
    let path = location
        .strip_prefix("file://")
        .or_else(|| location.strip_prefix("file:"))
        .map_or_else(
            || location.to_owned(),
            |rest| format!("/{}", rest.trim_start_matches('/')),
        );
    PathBuf::from(path)
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> iceberg::Error {
    iceberg::Error::new(
        iceberg::ErrorKind::Unexpected,
        format!("spooling {}: {e}", path.display()),
    )
}

/// Builds [`LakeStorage`] for iceberg-rust. Serialisable as iceberg-rust asks, but the
/// buckets (live clients) are not: a deserialised factory serves local paths only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LakeStorageFactory {
    #[serde(skip)]
    buckets: Buckets,
}

#[typetag::serde]
impl StorageFactory for LakeStorageFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn IcebergStorage>> {
        Ok(Arc::new(LakeStorage {
            buckets: self.buckets.clone(),
        }))
    }
}

/// iceberg-rust's storage over the lake's: S3 locations through [`Storage`], local ones
/// through iceberg-rust's own local storage for reads and deletes, and through
/// [`super::durable`] for writes (atomic and fsynced, file and folder).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LakeStorage {
    #[serde(skip)]
    buckets: Buckets,
}

#[async_trait]
#[typetag::serde]
impl IcebergStorage for LakeStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.buckets.resolve(path)? {
            None => LocalFsStorage::new().exists(path).await,
            Some((storage, key)) => match storage.head(&key).await {
                Ok(_) => Ok(true),
                Err(StorageError::NotFound { .. }) => Ok(false),
                Err(e) => Err(iceberg_error(e)),
            },
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        match self.buckets.resolve(path)? {
            None => LocalFsStorage::new().metadata(path).await,
            Some((storage, key)) => {
                let meta = storage.head(&key).await.map_err(iceberg_error)?;
                Ok(FileMetadata { size: meta.size })
            }
        }
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        match self.buckets.resolve(path)? {
            None => LocalFsStorage::new().read(path).await,
            Some((storage, key)) => storage
                .get_bytes(&key)
                .await
                .map_err(iceberg_error)?
                .ok_or_else(|| iceberg_error(StorageError::NotFound { uri: path.into() })),
        }
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        match self.buckets.resolve(path)? {
            None => LocalFsStorage::new().reader(path).await,
            Some((storage, key)) => Ok(Box::new(ObjectRead {
                storage: storage.clone(),
                key,
            })),
        }
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        match self.buckets.resolve(path)? {
            None => {
                let path = local_path(path);
                tokio::task::spawn_blocking(move || durable::write_atomically(&path, &bs))
                    .await
                    .map_err(join_error)?
                    .map_err(durable_error)
            }
            Some((storage, key)) => storage.put_bytes(&key, bs).await.map_err(iceberg_error),
        }
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        match self.buckets.resolve(path)? {
            None => {
                let path = local_path(path);
                let file = tokio::task::spawn_blocking(move || AtomicFile::create(&path))
                    .await
                    .map_err(join_error)?
                    .map_err(durable_error)?;
                Ok(Box::new(LocalWrite { file: Some(file) }))
            }
            Some((storage, key)) => {
                // Named like put_bytes' spool files, so a killed run's are cleaned up.
                let spool = storage
                    .spool_dir()
                    .map_err(iceberg_error)?
                    .join(format!("{PUT_PREFIX}{}.tmp", unique_suffix()));
                let file = durable::create_private(&spool)
                    .map(tokio::fs::File::from_std)
                    .map_err(|e| io_error(&spool, e))?;
                Ok(Box::new(SpooledWrite {
                    storage: storage.clone(),
                    key,
                    spool,
                    file: Some(file),
                }))
            }
        }
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        match self.buckets.resolve(path)? {
            None => LocalFsStorage::new().delete(path).await,
            Some((storage, key)) => storage.delete(&key).await.map_err(iceberg_error),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        match self.buckets.resolve(path)? {
            None => LocalFsStorage::new().delete_prefix(path).await,
            Some((storage, key)) => {
                let prefix = format!("{}/", key.trim_end_matches('/'));
                for object in storage.list_all(&prefix).await.map_err(iceberg_error)? {
                    storage.delete(&object.key).await.map_err(iceberg_error)?;
                }
                Ok(())
            }
        }
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

/// Ranged reads of one S3 object (Parquet footers and row groups).
struct ObjectRead {
    storage: Storage,
    key: String,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.storage
            .get_range(&self.key, range)
            .await
            .map_err(iceberg_error)
    }
}

/// A local file being written: beside its path, put in place durably when closed. Dropped
/// unclosed, it is removed and nothing is at the path.
struct LocalWrite {
    file: Option<AtomicFile>,
}

impl LocalWrite {
    fn take(&mut self) -> iceberg::Result<AtomicFile> {
        self.file.take().ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "writing a local file after it was closed (or after a failed write)",
            )
        })
    }
}

#[async_trait]
impl FileWrite for LocalWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        let mut file = self.take()?;
        let (file, written) = tokio::task::spawn_blocking(move || {
            let written = file.write_all(&bs);
            (file, written)
        })
        .await
        .map_err(join_error)?;
        self.file = Some(file);
        written.map_err(durable_error)
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || file.commit())
            .await
            .map_err(join_error)?
            .map_err(durable_error)
    }
}

/// A file being written for S3: bytes go to a local spool file, which is put when closed
/// (memory stays bounded whatever the file's size). Dropped unclosed, nothing is put.
struct SpooledWrite {
    storage: Storage,
    key: String,
    spool: PathBuf,
    file: Option<tokio::fs::File>,
}

#[async_trait]
impl FileWrite for SpooledWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("writing {} after it was closed", self.key),
            )
        })?;
        file.write_all(&bs)
            .await
            .map_err(|e| io_error(&self.spool, e))
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        if let Err(e) = file.flush().await {
            drop(file);
            let _ = std::fs::remove_file(&self.spool);
            return Err(io_error(&self.spool, e));
        }
        drop(file);
        // put_file removes the spool file, whether the put succeeded or not.
        self.storage
            .put_file(&self.spool, &self.key)
            .await
            .map_err(iceberg_error)
    }
}

impl Drop for SpooledWrite {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.spool);
        }
    }
}

/// DataFusion's view of one bucket: reads, listings and deletes through [`Storage`].
struct LakeObjectStore {
    storage: Storage,
}

impl fmt::Debug for LakeObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeObjectStore({})", self.storage.describe())
    }
}

impl fmt::Display for LakeObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.storage.describe())
    }
}

const STORE: &str = "tributary lake";

fn store_error(e: StorageError) -> object_store::Error {
    match e {
        StorageError::NotFound { uri } => object_store::Error::NotFound {
            path: uri.clone(),
            source: format!("{uri} not found").into(),
        },
        e => object_store::Error::Generic {
            store: STORE,
            source: Box::new(e),
        },
    }
}

fn not_implemented(operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented {
        operation: operation.to_owned(),
        implementer: STORE.to_owned(),
    }
}

/// A lake key as an object path, literally (`ObjectPath::from` would percent-encode some
/// characters, and the path would no longer name the object).
fn object_path(key: &str) -> ObjectPath {
    ObjectPath::parse(key).unwrap_or_else(|_| ObjectPath::from(key))
}

fn object_meta(meta: super::ObjectMeta) -> object_store::ObjectMeta {
    object_store::ObjectMeta {
        location: object_path(&meta.key),
        last_modified: meta.last_modified.unwrap_or_else(Utc::now),
        size: meta.size,
        e_tag: None,
        version: None,
    }
}

/// `prefix` as a folder: `a/b` lists `a/b/x`, not `a/bc`.
fn folder(prefix: Option<&ObjectPath>) -> String {
    match prefix.map(|p| p.as_ref()).filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}/"),
        None => String::new(),
    }
}

#[async_trait]
impl ObjectStore for LakeObjectStore {
    async fn put_opts(
        &self,
        _location: &ObjectPath,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(not_implemented("put"))
    }

    async fn put_multipart_opts(
        &self,
        _location: &ObjectPath,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_implemented("put_multipart"))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref();
        // A bounded range is one GET. DataFusion takes sizes from listings and heads, never
        // from a ranged read's meta, whose size is then the range's end.
        let (meta, range) = match &options.range {
            Some(GetRange::Bounded(range)) if !options.head => {
                let meta = super::ObjectMeta {
                    key: key.to_owned(),
                    size: range.end,
                    last_modified: None,
                };
                (meta, range.clone())
            }
            _ => {
                let meta = self.storage.head(key).await.map_err(store_error)?;
                let range = match &options.range {
                    Some(r) => r
                        .as_range(meta.size)
                        .map_err(|e| object_store::Error::Generic {
                            store: STORE,
                            source: Box::new(e),
                        })?,
                    None => 0..meta.size,
                };
                (meta, range)
            }
        };
        let bytes = if options.head {
            Bytes::new()
        } else {
            self.storage
                .get_range(key, range.clone())
                .await
                .map_err(store_error)?
        };
        // S3 returns fewer bytes than asked when the range passes the end, never more (a
        // server that ignored the range would hand the Parquet reader the wrong bytes).
        if bytes.len() as u64 > range.end.saturating_sub(range.start) {
            return Err(object_store::Error::Generic {
                store: STORE,
                source: format!(
                    "{}: asked for bytes {range:?}, the server sent {}",
                    self.storage.uri(key),
                    bytes.len()
                )
                .into(),
            });
        }
        let range = range.start..range.start + bytes.len() as u64;
        let range = if options.head { 0..meta.size } else { range };
        Ok(GetResult {
            payload: GetResultPayload::Stream(
                stream::once(async move { Ok::<_, object_store::Error>(bytes) }).boxed(),
            ),
            meta: object_store::ObjectMeta {
                location: location.clone(),
                ..object_meta(meta)
            },
            range,
            attributes: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let storage = self.storage.clone();
        locations
            .then(move |location| {
                let storage = storage.clone();
                async move {
                    let location = location?;
                    storage
                        .delete(location.as_ref())
                        .await
                        .map_err(store_error)?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        let storage = self.storage.clone();
        let prefix = folder(prefix);
        stream::once(async move { storage.list_all(&prefix).await })
            .map(|listed| match listed {
                Ok(objects) => {
                    stream::iter(objects.into_iter().map(|o| Ok(object_meta(o)))).boxed()
                }
                Err(e) => stream::once(async move { Err(store_error(e)) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        let prefix = folder(prefix);
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
        };
        let mut token = None;
        loop {
            let page = self
                .storage
                .list_page(&prefix, true, token)
                .await
                .map_err(store_error)?;
            result
                .objects
                .extend(page.objects.into_iter().map(object_meta));
            result.common_prefixes.extend(
                page.prefixes
                    .iter()
                    .map(|p| object_path(p.trim_end_matches('/'))),
            );
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(result),
            }
        }
    }

    async fn copy_opts(
        &self,
        _from: &ObjectPath,
        _to: &ObjectPath,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(not_implemented("copy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn local_files_are_put_in_place_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let file_io = Buckets::default().file_io();
        let metadata = dir.path().join("t/metadata");
        let json = metadata.join("00001-x.metadata.json");
        // Whole writes (metadata files), in folders made on the way.
        file_io
            .new_output(format!("file://{}", json.display()))
            .unwrap()
            .write(Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&json).unwrap(), b"{}");
        assert_eq!(names(&metadata), ["00001-x.metadata.json"]);

        // Streamed writes (data files, manifests): nothing at the path before close.
        let data = dir.path().join("t/data/part-1.parquet");
        let output = file_io.new_output(data.to_string_lossy()).unwrap();
        let mut writer = output.writer().await.unwrap();
        writer.write(Bytes::from_static(b"PAR1")).await.unwrap();
        writer.write(Bytes::from_static(b"...")).await.unwrap();
        assert!(!data.exists(), "a partial file is never at its path");
        writer.close().await.unwrap();
        assert_eq!(std::fs::read(&data).unwrap(), b"PAR1...");
        assert_eq!(names(data.parent().unwrap()), ["part-1.parquet"]);

        // A writer dropped unclosed (a failed or cancelled run) leaves nothing.
        let lost = dir.path().join("t/data/part-2.parquet");
        let mut writer = file_io
            .new_output(lost.to_string_lossy())
            .unwrap()
            .writer()
            .await
            .unwrap();
        writer.write(Bytes::from_static(b"PAR1")).await.unwrap();
        drop(writer);
        assert_eq!(names(data.parent().unwrap()), ["part-1.parquet"]);
    }

    #[test]
    fn local_locations_are_read_as_iceberg_rust_reads_them() {
        for location in ["file:///a/b", "file://a/b", "file:/a/b", "/a/b"] {
            assert_eq!(local_path(location), PathBuf::from("/a/b"), "{location}");
        }
    }
}
