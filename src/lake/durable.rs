//! Local files that survive a power loss, and folders no other user can read.
//!
//! Invariants:
//! - a file written by [`write_atomically`] or through [`AtomicFile`] is at its path complete
//!   or not at all: it is written under a temporary name beside it, fsynced, renamed into
//!   place, and the folder is fsynced, so after a crash the path holds the old file or the
//!   whole new one, never an empty or partial one;
//! - folders made by [`create_dir_all`] are recorded in their parents (each parent fsynced),
//!   so a durable file is not lost with a folder entry that was not;
//! - a replaced file keeps its permissions (and, when allowed, its owner); a new one gets the
//!   process's default (`0666` less the umask);
//! - a private folder ([`private_dir`]) is a real folder (never a symbolic link), owned by the
//!   effective user, mode `0700`; files made in it by [`create_private`] are new files (never
//!   an existing file or a link to one), mode `0600`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the folder {path} belongs to user id {owner}, not to this user (id {uid}): its owner could read or replace the files written there"
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error("{path} is a symbolic link or not a folder, where a private folder must be")]
    NotAFolder { path: PathBuf },
}

impl DurableError {
    fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        DurableError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Makes its folder entry durable: fsyncs the folder `dir`.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DurableError::io("syncing folder", dir, e))
}

/// `create_dir_all`, with each folder it creates recorded durably in its parent.
pub fn create_dir_all(dir: &Path) -> Result<(), DurableError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.is_dir() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for folder in missing.into_iter().rev() {
        match std::fs::create_dir(folder) {
            Ok(()) => {}
            // Made meanwhile by another writer: it is as good.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && folder.is_dir() => {}
            Err(e) => return Err(DurableError::io("creating folder", folder, e)),
        }
        sync_dir(parent_of(folder))?;
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary name beside `path`, hidden (a leading `.`) and unpredictable.
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A short name part: the result must stay within a file name's 255 bytes.
    let short: String = name.chars().take(100).collect();
    parent_of(path).join(format!(".{short}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

/// What replacing the file at a path must keep: its permissions and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Replaces (or creates) the file at `path` with `bytes`, atomically and durably (see the
/// module's invariants). A symbolic link at `path` is followed: its target is replaced and
/// the link stays.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// A file being written under a temporary name beside its path; [`AtomicFile::commit`]
/// fsyncs it and renames it into place. Dropped uncommitted, it is removed.
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Starts the file that will be at `path`, creating its folder (durably) if needed.
    pub fn create(path: &Path) -> Result<AtomicFile, DurableError> {
        // The file a link points at is the one to replace; a dangling link's target is new.
        let dest = std::fs::canonicalize(path)
            .ok()
            .filter(|_| path.is_symlink())
            .unwrap_or_else(|| path.to_owned());
        create_dir_all(parent_of(&dest))?;
        let kept = std::fs::metadata(&dest).ok().map(|m| Kept {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        });
        let tmp = temporary_beside(&dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            // A new file: the default mode, less the umask. A replaced one: its own, set below
            // (the umask may have removed some of its bits).
            .mode(kept.map_or(0o666, |k| k.mode & 0o777))
            .open(&tmp)
            .map_err(|e| DurableError::io("creating", &tmp, e))?;
        let mut atomic = AtomicFile {
            dest,
            tmp,
            file: Some(file),
        };
        if let Some(kept) = kept {
            atomic.keep(kept)?;
        }
        Ok(atomic)
    }

    fn keep(&mut self, kept: Kept) -> Result<(), DurableError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if kept.uid != uid || file.metadata().is_ok_and(|m| m.gid() != kept.gid) {
            // Only root may give a file away; anyone else writes the file as their own.
            let _ = std::os::unix::fs::fchown(file, Some(kept.uid), Some(kept.gid));
        }
        file.set_permissions(std::fs::Permissions::from_mode(kept.mode))
            .map_err(|e| DurableError::io("setting permissions of", &self.tmp, e))
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), DurableError> {
        let Some(file) = &mut self.file else {
            return Err(DurableError::io(
                "writing",
                &self.dest,
                std::io::Error::other("the file is already committed"),
            ));
        };
        file.write_all(bytes)
            .map_err(|e| DurableError::io("writing", &self.tmp, e))
    }

    /// Makes the file durable and puts it at its path, then makes that durable.
    pub fn commit(mut self) -> Result<(), DurableError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let done = file
            .sync_all()
            .map_err(|e| DurableError::io("syncing", &self.tmp, e))
            .and_then(|()| {
                drop(file);
                std::fs::rename(&self.tmp, &self.dest)
                    .map_err(|e| DurableError::io("renaming into", &self.dest, e))
            });
        if let Err(e) = done {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        sync_dir(parent_of(&self.dest))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// What to do with an existing folder that must be private.
#[derive(Debug, PartialEq, Eq)]
enum PrivateDir {
    Fine,
    /// Ours, but others may read or enter it: set it to 0700.
    FixMode,
    NotOwned {
        owner: u32,
    },
}

fn judge_private_dir(owner: u32, mode: u32, uid: u32) -> PrivateDir {
    if owner != uid {
        PrivateDir::NotOwned { owner }
    } else if mode & 0o777 != 0o700 {
        PrivateDir::FixMode
    } else {
        PrivateDir::Fine
    }
}

/// Makes `dir` a private folder (see the module's invariants): created `0700` if absent;
/// if it exists, it must be a real folder of this user, whose mode is set to `0700` if it was
/// wider; a folder of another user, or a link, is refused.
pub fn private_dir(dir: &Path) -> Result<(), DurableError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| DurableError::io("creating folder", parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(DurableError::io("creating folder", dir, e)),
    }
    // Judged through a descriptor that cannot be a link, so what is judged is what is fixed.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir);
    let folder = match opened {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            return Err(DurableError::NotAFolder {
                path: dir.to_owned(),
            });
        }
        Err(e) => return Err(DurableError::io("opening folder", dir, e)),
    };
    let meta = folder
        .metadata()
        .map_err(|e| DurableError::io("reading", dir, e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    match judge_private_dir(meta.uid(), meta.mode(), uid) {
        PrivateDir::Fine => Ok(()),
        PrivateDir::FixMode => folder
            .set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(|e| DurableError::io("setting permissions of", dir, e)),
        PrivateDir::NotOwned { owner } => Err(DurableError::NotOwned {
            path: dir.to_owned(),
            owner,
            uid,
        }),
    }
}

/// Creates the new file `path`, mode `0600`: an existing file or link there is an error
/// (`AlreadyExists`), never opened.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The mode a file made by this process gets by default: `0666` less the umask (read from
/// `/proc/self/status`; `0600` when it cannot be known, which shares nothing).
pub fn default_file_mode() -> u32 {
    static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| umask_of(&status))
            .map_or(0o600, |umask| 0o666 & !umask)
    })
}

fn umask_of(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");

        // A new file, in new folders: the default mode.
        let deep = dir.path().join("a/b/new.toml");
        write_atomically(&deep, b"x").unwrap();
        assert_eq!(mode(&deep), default_file_mode());
    }

    #[test]
    fn a_link_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.toml");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("ws.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert!(link.is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    }

    #[test]
    fn an_uncommitted_file_is_removed_and_the_old_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.toml");
        std::fs::write(&path, "old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_folders_are_judged_by_owner_and_mode() {
        assert_eq!(judge_private_dir(1000, 0o40700, 1000), PrivateDir::Fine);
        assert_eq!(judge_private_dir(1000, 0o40755, 1000), PrivateDir::FixMode);
        assert_eq!(judge_private_dir(1000, 0o40777, 1000), PrivateDir::FixMode);
        assert_eq!(judge_private_dir(1000, 0o40600, 1000), PrivateDir::FixMode);
        assert_eq!(
            judge_private_dir(0, 0o40700, 1000),
            PrivateDir::NotOwned { owner: 0 }
        );
    }

    #[test]
    fn a_private_folder_is_made_fixed_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("x/spool");
        private_dir(&spool).unwrap();
        assert_eq!(mode(&spool), 0o700);
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&spool).unwrap();
        assert_eq!(mode(&spool), 0o700, "a wide folder of ours is narrowed");

        let file = spool.join("f");
        let created = create_private(&file).unwrap();
        drop(created);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(
            create_private(&file).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists,
            "an existing file is never opened"
        );

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&spool, &link).unwrap();
        assert!(matches!(
            private_dir(&link),
            Err(DurableError::NotAFolder { .. })
        ));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(matches!(
            private_dir(&plain),
            Err(DurableError::NotAFolder { .. })
        ));

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // As root, a folder given to another user (nobody) shows the refusal.
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let err = private_dir(&theirs).unwrap_err();
            assert!(
                matches!(err, DurableError::NotOwned { owner: 65534, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn the_umask_is_read_from_proc_status() {
        assert_eq!(umask_of("Name:\tx\nUmask:\t0022\nState:\tR"), Some(0o022));
        assert_eq!(umask_of("Name:\tx\n"), None);
        assert_eq!(default_file_mode() & !0o666, 0);
    }
}
