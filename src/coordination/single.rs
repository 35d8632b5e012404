//! SQLite stays one long-running process: `soloist run` and `soloist chat`
//! take an exclusive lock on a file next to the database (`<db>.lock`) for
//! as long as they live. The lock is `flock`: the operating system drops it
//! when the process dies, however it dies, so a crash never leaves a stale
//! lock behind. Short commands (`ingest`, `replay`, `doctor`, `digest
//! --now`, `eval`) do not take it: they work beside the long-running
//! process through SQLite's own locking and its busy timeout.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SingleError {
    #[error(
        "another soloist (run or chat) is already using {db}: SQLite serves one long-running process; stop it first, or use PostgreSQL to run several"
    )]
    Busy { db: String },
    #[error("cannot create the lock file {path}")]
    LockFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held while this process is the one long-running soloist on a SQLite
/// file; dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct SqliteLock {
    _file: File,
    path: PathBuf,
}

impl SqliteLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock for the SQLite database at `url`; None for PostgreSQL
/// and in-memory databases (several processes share PostgreSQL).
pub fn lock_sqlite(url: &str) -> Result<Option<SqliteLock>, SingleError> {
    let Some(db) = crate::store::sqlite_path(url) else {
        return Ok(None);
    };
    if let Some(parent) = db.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SingleError::LockFile {
            path: path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(SqliteLock { _file: file, path })),
        Err(TryLockError::WouldBlock) => Err(SingleError::Busy {
            db: db.display().to_string(),
        }),
        Err(TryLockError::Error(source)) => Err(SingleError::LockFile {
            path: path.display().to_string(),
            source,
        }),
    }
}
