//! `soloist backup PATH`: a consistent copy of the database while soloist
//! runs. SQLite: `VACUUM INTO`, an online copy taken inside one read
//! transaction (writers go on; the copy is a compact, complete database
//! file). Restoring is putting that file in place of `data/soloist.db`
//! while soloist is stopped. PostgreSQL has its own tools: `pg_dump` and
//! `pg_restore` (the README shows both).

use std::path::{Path, PathBuf};

use crate::store::{Backend, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "soloist backup copies SQLite databases; for PostgreSQL use pg_dump (see the README's Backups section)"
    )]
    Postgres,
    #[error("{0} already exists: give a new file name, a backup never overwrites")]
    Exists(String),
    #[error("cannot back up an in-memory database")]
    InMemory,
    #[error("the backup could not be written to {path}")]
    Write {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot open the database")]
    Open(#[source] StoreError),
}

/// Copies the database at `url` to `target`; returns the file written.
pub async fn backup(url: &str, target: &Path) -> Result<PathBuf, BackupError> {
    match Backend::from_url(url).map_err(BackupError::Open)? {
        Backend::Postgres => return Err(BackupError::Postgres),
        Backend::Sqlite if crate::store::sqlite_path(url).is_none() => {
            return Err(BackupError::InMemory);
        }
        Backend::Sqlite => {}
    }
    if target.exists() {
        return Err(BackupError::Exists(target.display().to_string()));
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(parent);
    }
    // Migrated first: a backup is a database this soloist can open.
    let store = Store::open(url, 1).await.map_err(BackupError::Open)?;
    let result = store.vacuum_into(target).await;
    store.close().await;
    result.map_err(|source| BackupError::Write {
        path: target.display().to_string(),
        source,
    })?;
    Ok(target.to_path_buf())
}
