//! The system of record. One set of queries serves PostgreSQL (deployments)
//! and SQLite (the embedded default) through sqlx's `Any` driver: the schema
//! keeps to the types `Any` carries (text ids, JSON as text, times as Unix
//! milliseconds), and the few dialect differences are chosen by [`Backend`].
//! Both backends pass the same conformance tests (`tests/store.rs`).

//!
//! Files by table: `runs` (run rows, artifacts), `journal`, `leases`
//! (claims, fenced writes), `approvals`, `actions` (action buttons),
//! `messages` (inbound, outbox, audit), `budget`, `ledger`, `batch`,
//! `updates` (raw platform updates); `tx` the transaction helpers for
//! tables owned elsewhere. [`Tx`], the transaction handle the engine
//! composes its transitions in, is defined here with the helpers every
//! file uses, so no store file imports another for them.

mod actions;
mod approvals;
mod batch;
mod budget;
mod digest;
mod digest_usage;
mod durability;
pub mod events;
mod fts5_rank;
mod guardrails;
mod journal;
mod leases;
mod ledger;
mod messages;
mod offers;
mod outbox;
mod publications;
mod reservations;
mod runs;
mod schedules;
mod tx;
mod updates;

pub use actions::ActionLookup;
pub use approvals::{ApprovalSummary, Decided, NewApproval};
pub use batch::{BatchItem, BatchOutcome, NewBatchItem};
pub use budget::{BudgetRefusal, Caps, PeriodStatus, Reservation};
pub use digest::{CallTotals, DailyCost, DigestSql, MetricTotals, Window};
pub use guardrails::GuardrailEvent;
pub use leases::{ClaimedRun, Fenced};
pub use ledger::{CostGroup, CostLine, CostSummary, LedgerEntry};
pub use messages::InboundRecord;
pub use offers::OfferDraft;
pub use outbox::{Claim, OutboxMessage, OutboxTrouble, Settlement};
pub use publications::{NewPublication, Publication, ResultRow};
pub use reservations::{HeldReservation, Release, ReleasedSummary};
pub use runs::{NewArtifact, NewRun, RunRow};
pub use schedules::{DueSchedule, FirePlan, MissRecord, PendingFire, ScheduleRow};
pub use updates::{PendingInteraction, RecordedUpdate};

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, SqlSafeStr, Transaction};

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
    #[error(
        "the database's schema is at version {found}, newer than this soloist knows (up to {known}): a newer soloist upgraded it; run that version or a newer one"
    )]
    SchemaNewer { found: i64, known: i64 },
    #[error("could not flush the database's log to disk")]
    Durability(#[source] std::io::Error),
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

/// The waits before each new try of a write the database refused for being
/// away (about 20 s in all: a PostgreSQL restart, cut connections).
const OUTAGE_WAITS: [Duration; 6] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// `attempt`, tried again while the database is unavailable for a moment;
/// any other error, or an outage longer than [`OUTAGE_WAITS`], is returned.
/// For writes whose loss costs money (a paid call's cost and ledger row).
pub(crate) async fn waiting_out_an_outage<T, F, Fut>(what: &str, mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut waits = OUTAGE_WAITS.iter();
    loop {
        match attempt().await {
            Err(error @ StoreError::Unavailable(_)) => {
                let Some(wait) = waits.next() else {
                    return Err(error);
                };
                tracing::warn!(error = ?error, ?wait, "{what} failed; trying again");
                tokio::time::sleep(*wait).await;
            }
            done => return done,
        }
    }
}

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

    /// The database a connection (or a transaction on it) talks to.
    pub(super) fn of(conn: &sqlx::AnyConnection) -> Backend {
        if conn.backend_name() == "PostgreSQL" {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// A subquery over the integers of a JSON array bound as `param`
    /// (`$3`). A list of `$n` written into the SQL is a new statement for
    /// each length: prepared anew every time, and crowding the connection's
    /// statement cache, so hot statements were prepared again too.
    pub fn json_integers(self, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("SELECT value FROM json_each({param})"),
            Backend::Postgres => {
                format!(
                    "SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST({param} AS JSON))"
                )
            }
        }
    }

    /// A subquery over a JSON array of objects bound as `param`: a row an
    /// object, with a column for each of `fields` (name, and whether it
    /// holds an integer) and `n`, the object's place in the array. Many
    /// rows are written by one statement this way, whatever their number.
    pub fn json_rows(self, param: &str, fields: &[(&str, bool)]) -> String {
        let columns = fields
            .iter()
            .map(|(name, integer)| match (self, integer) {
                (Backend::Sqlite, _) => format!("json_extract(value, '$.{name}') AS {name}"),
                (Backend::Postgres, true) => format!("CAST(e.v->>'{name}' AS BIGINT) AS {name}"),
                (Backend::Postgres, false) => format!("e.v->>'{name}' AS {name}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            Backend::Sqlite => format!("SELECT {columns}, key AS n FROM json_each({param})"),
            Backend::Postgres => format!(
                "SELECT {columns}, e.n FROM json_array_elements(CAST({param} AS JSON)) WITH ORDINALITY AS e(v, n)"
            ),
        }
    }

    /// The same over the strings of a JSON array.
    pub fn json_texts(self, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("SELECT value FROM json_each({param})"),
            Backend::Postgres => {
                format!("SELECT value FROM json_array_elements_text(CAST({param} AS JSON))")
            }
        }
    }
}

/// Kept here too: the store's callers redact the URLs they open.
pub use crate::config::redact_url;

/// The PostgreSQL channel on which a queued outbox row is announced
/// (payload `platform:chat_id`), so every process's outbox is woken.
pub const OUTBOX_CHANNEL: &str = "soloist_outbox";

/// A pooled connection idle this long is pinged before use: it may have
/// outlived a database restart. One used more recently is not (see
/// [`Store::connect`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// SQLite connections kept for reads beside the one writer (see
/// [`Store::reads`]): one a core of these machines is enough for the
/// retrieval and status reads that would otherwise queue behind a write.
const SQLITE_READERS: u32 = 2;

/// A reader unused this long is closed: each holds a page cache of its
/// own, which an idle bot should not keep.
const SQLITE_READER_IDLE: Duration = Duration::from_secs(30);

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where reads outside a transaction go: on a SQLite file, a pool of
    /// read-only connections beside the writer; otherwise `pool` itself.
    reads: AnyPool,
    backend: Backend,
    /// PostgreSQL: where a listener connects (LISTEN needs a connection of
    /// its own). Never printed: it may carry a password.
    listen_url: Option<Arc<crate::config::Secret>>,
    /// A digest of the URL: which database this is, for in-process caches
    /// (never the URL itself, which may carry a password).
    identity: Arc<str>,
    /// A SQLite file: its commits' shared flushes (group commit).
    wal_sync: Option<Arc<durability::WalSync>>,
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
            fts5_rank::register();
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
            // sqlx pings a connection on every acquire by default: one more
            // round trip per statement outside a transaction (SQLite: a hop
            // to its worker thread and back; about 40 a draft, all
            // serialised on the one connection). A connection idle long
            // enough to have missed a database restart is still pinged.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < PING_IF_IDLE_FOR {
                        return Ok(true);
                    }
                    use sqlx::Connection;
                    conn.ping().await.map(|()| true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                            .await?;
                        // A file's commits are flushed in groups after they
                        // are written (durability.rs), not one by one inside.
                        if !main_file(conn).await?.is_empty() {
                            conn.execute("PRAGMA synchronous = NORMAL;").await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let reads = match backend {
            Backend::Sqlite if is_sqlite_file(url) => sqlite_readers(options),
            _ => pool.clone(),
        };
        let listen_url =
            (backend == Backend::Postgres).then(|| Arc::new(crate::config::Secret::new(url)));
        let identity = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(url.as_bytes());
            digest[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        // The file SQLite itself opened, not one parsed from the URL: its
        // log is what must be flushed.
        let wal_sync = match backend {
            Backend::Sqlite => {
                let mut conn = pool.acquire().await?;
                let file = main_file(&mut conn).await?;
                (!file.is_empty()).then(|| durability::WalSync::for_database(Path::new(&file)))
            }
            Backend::Postgres => None,
        };
        Ok(Store {
            pool,
            reads,
            backend,
            listen_url,
            identity: identity.into(),
            wal_sync,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for a read that needs no transaction. On a SQLite file these
    /// are read-only connections of their own: SQLite's write-ahead log lets
    /// them read beside the one writer, so a retrieval or a status read does
    /// not queue behind other lanes' writes on the single write connection.
    /// A read here sees every transaction committed before it starts (a
    /// caller's own commits included); it cannot see one still open, so a
    /// read that must be part of a change goes through [`Tx`] instead.
    pub fn reads(&self) -> &AnyPool {
        &self.reads
    }

    /// Which database this is (a digest of its URL), for in-process caches.
    pub fn identity(&self) -> String {
        self.identity.to_string()
    }

    /// PostgreSQL: a listener on `channel`, on a connection of its own.
    pub async fn listen(&self, channel: &str) -> StoreResult<Option<sqlx::postgres::PgListener>> {
        let Some(url) = self.listen_url.as_ref().and_then(|u| u.expose()) else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(channel).await?;
        Ok(Some(listener))
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        self.refuse_newer_schema().await?;
        migrator(self.backend)
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)?;
        self.durable().await
    }

    /// Refuses a database a newer soloist migrated (a migration version
    /// this binary does not have): during a rolling upgrade the old process
    /// must not write to a schema it does not know. Migrations are
    /// additive, so processes already running keep working; this stops
    /// only a start.
    pub async fn refuse_newer_schema(&self) -> StoreResult<()> {
        // No migrations table yet: a fresh database.
        let Ok(found) =
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(&self.pool)
                .await
        else {
            return Ok(());
        };
        let known = migrator(self.backend)
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        match found {
            Some(found) if found > known => Err(StoreError::SchemaNewer { found, known }),
            _ => Ok(()),
        }
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
        self.reads.close().await;
        self.pool.close().await;
    }
}

/// One migration a line, for both dialects: version, what it does, file
/// name (the same under `migrations/postgres/` and `migrations/sqlite/`).
macro_rules! migrations {
    ($($version:literal $what:literal $file:literal,)*) => {
        Migrations {
            postgres: &[$(
                ($version, $what, include_str!(concat!("../../migrations/postgres/", $file))),
            )*],
            sqlite: &[$(
                ($version, $what, include_str!(concat!("../../migrations/sqlite/", $file))),
            )*],
        }
    };
}

struct Migrations {
    postgres: &'static [(i64, &'static str, &'static str)],
    sqlite: &'static [(i64, &'static str, &'static str)],
}

/// Additive only: an older process keeps working on a newer schema.
const MIGRATIONS: Migrations = migrations![
    1 "init" "0001_init.sql",
    2 "platform updates" "0002_platform_updates.sql",
    3 "front door" "0003_front_door.sql",
    4 "input from the presser" "0004_input_from.sql",
    5 "outbox claims" "0005_outbox_claims.sql",
    6 "budget reservations" "0006_budget_reservations.sql",
    7 "schedules" "0007_schedules.sql",
    8 "memory" "0008_memory.sql",
    9 "guardrails" "0009_guardrails.sql",
    10 "events and autonomy" "0010_events_autonomy.sql",
    11 "leads and e-mail" "0011_leads.sql",
    12 "funnel: publications and results" "0012_funnel.sql",
    13 "offers and blobs" "0013_offers.sql",
    14 "coordination: leader leases, shared send pacing" "0014_coordination.sql",
    15 "embeddings" "0015_embeddings.sql",
    18 "approval button labels" "0018_button_labels.sql",
    19 "full-text word statistics" "0019_fulltext_statistics.sql",
    20 "full-text index without a pending list" "0020_fulltext_no_pending_list.sql",
];

/// The migrations compiled into the binary, for one backend.
fn migrator(backend: Backend) -> Migrator {
    let sources = match backend {
        Backend::Postgres => MIGRATIONS.postgres,
        Backend::Sqlite => MIGRATIONS.sqlite,
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

/// The file of a SQLite connection's main database; empty for an in-memory
/// or temporary one.
async fn main_file(conn: &mut sqlx::AnyConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .fetch_one(conn)
        .await
}

/// A SQLite URL naming a file other connections can open too (not an
/// in-memory database, which is private to its connection).
fn is_sqlite_file(url: &str) -> bool {
    sqlite_path(url).is_some() && !url.contains("mode=memory")
}

/// Read-only connections to a SQLite file, opened only when a read needs
/// one. `query_only` makes a write sent here by mistake fail at once
/// instead of contending with the writer.
fn sqlite_readers(options: AnyConnectOptions) -> AnyPool {
    AnyPoolOptions::new()
        .max_connections(SQLITE_READERS)
        .min_connections(0)
        .idle_timeout(SQLITE_READER_IDLE)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with(options)
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

/// One open transaction. The store's table helpers take it, so a caller can
/// make several changes (wake a run, journal why, mark the update handled)
/// commit together or not at all. Dropped without [`Tx::commit`], it rolls
/// back.
///
/// On SQLite one connection writes: while a `Tx` is open, the same task
/// must not write through the [`Store`] directly, or it waits for itself
/// (reads go to [`Store::reads`] and do not wait).
pub struct Tx {
    pub(super) inner: Transaction<'static, Any>,
    wal_sync: Option<Arc<durability::WalSync>>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

impl Store {
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(Tx {
            inner: self.pool.begin().await?,
            wal_sync: self.wal_sync.clone(),
        })
    }

    /// Commits a transaction and returns once it is on disk (SQLite: in a
    /// flush shared with other commits; see durability.rs).
    pub(crate) async fn commit_durably(&self, tx: Transaction<'_, Any>) -> StoreResult<()> {
        tx.commit().await?;
        self.durable().await
    }

    /// A SQLite file: how many times its log was flushed to disk so far,
    /// one flush covering every commit made while the previous one ran.
    /// None where the database flushes its own commits.
    pub fn log_flushes(&self) -> Option<u64> {
        self.wal_sync.as_ref().map(|sync| sync.flushes())
    }

    /// Returns once every write this store committed so far is on disk:
    /// after a single statement that wrote outside a transaction.
    pub(crate) async fn durable(&self) -> StoreResult<()> {
        self.flushed(()).await
    }

    /// Passes on what a single statement that wrote outside a transaction
    /// returned, once that write is on disk.
    pub(crate) async fn flushed<T>(&self, wrote: T) -> StoreResult<T> {
        durability::covered(self.wal_sync.as_deref()).await?;
        Ok(wrote)
    }
}

impl Tx {
    /// The transaction's connection, for modules that keep their own
    /// tables' queries beside their code (`email`, `leads`).
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }

    /// Commits, and returns once the commit is on disk.
    pub async fn commit(self) -> StoreResult<()> {
        self.inner.commit().await?;
        durability::covered(self.wal_sync.as_deref()).await
    }

    pub async fn rollback(self) -> StoreResult<()> {
        Ok(self.inner.rollback().await?)
    }
}

pub(super) fn parse_id<T: std::str::FromStr>(text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| corrupt(format!("'{text}' is not a valid id")))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("cannot encode: {e}")))
}

impl Store {
    /// SQLite's online copy into a new file (`soloist backup`).
    pub async fn vacuum_into(&self, target: &Path) -> StoreResult<()> {
        sqlx::query("VACUUM INTO $1")
            .bind(target.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        // SQLite does not flush a `VACUUM INTO` copy itself (its documented
        // behaviour): a backup a power cut could leave half on disk is none.
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || flush_file_and_its_entry(&target))
            .await
            .map_err(|e| StoreError::Durability(std::io::Error::other(e)))?
            .map_err(StoreError::Durability)
    }
}

/// Flushes a new file, then its folder, so both its bytes and its name
/// survive a power cut.
fn flush_file_and_its_entry(file: &Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(folder) => std::fs::File::open(folder)?.sync_all(),
        None => std::fs::File::open(".")?.sync_all(),
    }
}
