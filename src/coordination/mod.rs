//! Work exactly one process may do at a time, when several `soloist run`
//! share one database: polling a Telegram bot (two pollers would steal each
//! other's updates: Telegram answers the older `getUpdates` with 409), and
//! holding a Discord gateway shard.
//!
//! The holder is chosen with a leased row (`leader_leases`), not a
//! PostgreSQL advisory lock: the row works the same on SQLite, and it
//! survives a cut connection. An advisory lock lives on one connection; a
//! database restart drops it silently, and a pool may hand its connection
//! to someone else. The holder renews its lease every [`RENEW_EVERY`];
//! when the process dies the lease lapses after [`LEASE`] and a process on
//! standby (asking every [`STANDBY_EVERY`]) takes over. A holder that
//! cannot renew (its database is away) stops the work itself before its
//! lease could lapse, so two holders never work at once by more than the
//! time one request takes to notice.

mod single;

pub use single::{SingleError, SqliteLock, lock_sqlite};

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// How long a lease lasts without renewal: the longest a takeover waits
/// after its holder died.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a process on standby asks for the lease.
pub const STANDBY_EVERY: Duration = Duration::from_secs(1);
/// The holder gives the work up when it has not renewed for this long, so
/// it stops before anyone else can take the lease.
const GIVE_UP_AFTER: Duration = Duration::from_secs(4);

/// This process in `leader_leases.holder`: host, pid and a random part (a
/// pid is reused after a restart).
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

/// Runs `work` while this process holds the lease `name`, until
/// `shutdown`. `work` gets a token cancelled when the lease is lost (or on
/// shutdown) and must return soon after; it is started again when the
/// lease is taken again. An error from `work` ends this (and gives the
/// lease up).
pub async fn while_leader<E, F, Fut>(
    store: &Store,
    name: &str,
    shutdown: &CancellationToken,
    mut work: F,
) -> Result<(), E>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let holder = holder_id();
    if store.backend() == crate::store::Backend::Sqlite {
        // One long-running process uses a SQLite file (its lock file says
        // so): a lease found there is a dead process's, not worth waiting
        // out.
        if let Err(error) = store.drop_leader_lease(name).await {
            tracing::debug!(error = ?error, lease = name, "could not drop a dead process's lease; it lapses");
        }
    }
    let mut outage = Outage::default();
    let mut waiting_logged = false;
    loop {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lease_ms = millis(LEASE);
        match store
            .take_leader_lease(name, &holder, &token, lease_ms)
            .await
        {
            Ok(true) => {
                outage.ended(name);
                tracing::info!(lease = name, %holder, "took the lease; this process does the work now");
                waiting_logged = false;
                let held = shutdown.child_token();
                let result = {
                    let heartbeat = renew(store, name, &holder, &token, &held);
                    let working = work(held.clone());
                    tokio::pin!(working);
                    tokio::select! {
                        result = &mut working => result,
                        () = heartbeat => {
                            // The lease is lost: stop the work, let it finish.
                            held.cancel();
                            working.await
                        }
                    }
                };
                held.cancel();
                if let Err(error) = store.release_leader_lease(name, &token).await {
                    tracing::debug!(error = ?error, lease = name, "could not give the lease up; it lapses");
                }
                if result.is_err() || shutdown.is_cancelled() {
                    return result;
                }
                tracing::warn!(lease = name, "lost the lease; standing by");
            }
            Ok(false) => {
                outage.ended(name);
                if !waiting_logged {
                    tracing::info!(lease = name, "another process holds the lease; standing by");
                    waiting_logged = true;
                }
            }
            Err(error) => outage.failed(name, &error),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(STANDBY_EVERY) => {}
        }
    }
}

/// Renews the lease every [`RENEW_EVERY`]; returns once it is lost (taken
/// by another, or not renewed for [`GIVE_UP_AFTER`]) or `held` is
/// cancelled.
async fn renew(store: &Store, name: &str, holder: &str, token: &str, held: &CancellationToken) {
    let mut renewed_at = Instant::now();
    let mut outage = Outage::default();
    loop {
        tokio::select! {
            _ = held.cancelled() => return,
            _ = tokio::time::sleep(RENEW_EVERY) => {}
        }
        match store
            .take_leader_lease(name, holder, token, millis(LEASE))
            .await
        {
            Ok(true) => {
                outage.ended(name);
                renewed_at = Instant::now();
            }
            Ok(false) => return,
            Err(error) => {
                outage.failed(name, &error);
                if renewed_at.elapsed() >= GIVE_UP_AFTER {
                    return;
                }
            }
        }
    }
}

/// One log line when the database goes away, one when it is back.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
}

impl Outage {
    fn failed(&mut self, name: &str, error: &StoreError) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(lease = name, error = ?error, "cannot reach the database for the lease; retrying");
        }
    }

    fn ended(&mut self, name: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(lease = name, after = ?since.elapsed(), "the database answers the lease again");
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
