//! The system of record. One set of queries serves PostgreSQL (deployments)
//! and SQLite (the embedded default) through sqlx's `Any` driver: the schema
//! keeps to the types `Any` carries (text ids, JSON as text, times as Unix
//! milliseconds), and the few dialect differences are chosen by [`Backend`].
//! Both backends pass the same conformance tests (`tests/store.rs`).

mod approvals;
mod batch;
mod budget;
mod ledger;
mod messages;
mod runs;
mod updates;

pub use approvals::{ApprovalSummary, DecideError, Decided, NewApproval};
pub use batch::{BatchItem, BatchOutcome, NewBatchItem};
pub use budget::{ActionLookup, BudgetRefusal, Caps, PeriodStatus, Reservation};
pub use ledger::{CostGroup, CostLine, CostSummary, LedgerEntry};
pub use messages::{InboundRecord, OutboxMessage};
pub use runs::{ClaimedRun, NewArtifact, NewRun, RunRow, Transition};
pub use updates::RecordedUpdate;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

/// Store failures. `Unavailable` is worth retrying (database down or
/// restarting); the rest are bugs or corrupt data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("stored data is not what soloist expects: {0}")]
    Corrupt(String),
    #[error("unsupported database URL '{0}': use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            other => StoreError::Query(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> StoreResult<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

/// A URL with any password replaced, fit for a log line or an error.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects (creating the SQLite file and its folder when needed) and
    /// applies pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Store> {
        let store = Store::connect(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        if backend == Backend::Sqlite {
            create_sqlite_folder(url);
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; one connection serialises our short
            // transactions instead of failing them with SQLITE_BUSY. No
            // connection is ever held across a model call.
            .max_connections(match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => max_connections.max(1),
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        migrator(self.backend)
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    /// Migrations not yet applied (for `soloist doctor`).
    pub async fn pending_migrations(&self) -> StoreResult<usize> {
        // No migrations table yet means nothing is applied.
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        Ok(migrator(self.backend)
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The migrations compiled into the binary, for one backend.
fn migrator(backend: Backend) -> Migrator {
    let sources: &[(i64, &str, &'static str)] = match backend {
        Backend::Postgres => &[
            (
                1,
                "init",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "platform updates",
                include_str!("../../migrations/postgres/0002_platform_updates.sql"),
            ),
            (
                8,
                "memory",
                include_str!("../../migrations/postgres/0008_memory.sql"),
            ),
        ],
        Backend::Sqlite => &[
            (
                1,
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "platform updates",
                include_str!("../../migrations/sqlite/0002_platform_updates.sql"),
            ),
            (
                8,
                "memory",
                include_str!("../../migrations/sqlite/0008_memory.sql"),
            ),
        ],
    };
    Migrator::with_migrations(
        sources
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The file a `sqlite:` URL names; None for other URLs and in-memory ones.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let path = rest
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn create_sqlite_folder(url: &str) {
    if let Some(parent) = sqlite_path(url).as_deref().and_then(Path::parent) {
        let _ = std::fs::create_dir_all(parent);
    }
}

/// Now, in Unix milliseconds: the one clock every table uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}
