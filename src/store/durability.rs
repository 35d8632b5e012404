//! Group commit for SQLite. SQLite has one writer; with `synchronous =
//! FULL` every commit waits for its own fsync of the write-ahead log while
//! holding that writer, so a burst of lanes pays one disk flush each, in a
//! row. Here the writer commits with `synchronous = NORMAL` (the commit is
//! written to the log, not yet flushed) and the committer then waits for a
//! flush of the log that started after its commit: one flush covers every
//! commit made while the previous one ran, and the writer takes the next
//! lane's transaction during it. A commit still returns only once it is on
//! disk, as with FULL (what FULL adds over NORMAL in WAL mode is exactly that
//! flush after each commit; checkpoints flush the log and the database file
//! themselves in both modes).
//!
//! What this changes: another connection can read a commit between its
//! write and its flush. After a power cut (not a process crash: the
//! operating system still holds the log) such a commit may be gone. Nothing
//! acts outside the machine on a read alone: a send, a model call or an
//! e-mail follows a claim or a reservation, a write whose own flush covers
//! everything committed before it.
//!
//! Every write path waits (`Tx::commit`, [`super::Store::commit_durably`],
//! [`super::Store::durable`] after a single statement); a safety net flushes
//! the log within a second of any change a path might not have waited for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::{StoreError, StoreResult};

/// How often the safety net looks at the log for changes nobody flushed.
const SAFETY_NET_EVERY: Duration = Duration::from_secs(1);

/// Flushes of one SQLite file's write-ahead log, shared by its committers.
#[derive(Debug)]
pub(super) struct WalSync {
    wal: PathBuf,
    /// Flushes begun so far; the one numbered `n` started after every
    /// commit that read `started == n - 1`.
    started: AtomicU64,
    /// The highest flush that has finished (they finish in order).
    done: AtomicU64,
    /// One flush at a time; commits made during it queue here and the next
    /// one in line flushes for all of them.
    flushing: tokio::sync::Mutex<()>,
    flush: fn(&Path) -> std::io::Result<()>,
}

impl WalSync {
    /// For the database file at `db`; its log is `db-wal` beside it.
    pub(super) fn for_database(db: &Path) -> Arc<WalSync> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let sync = Arc::new(WalSync::with_flush(PathBuf::from(wal), flush_log));
        spawn_safety_net(Arc::downgrade(&sync));
        sync
    }

    fn with_flush(wal: PathBuf, flush: fn(&Path) -> std::io::Result<()>) -> WalSync {
        WalSync {
            wal,
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            flush,
        }
    }

    /// Flushes of the log finished so far.
    pub(super) fn flushes(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Returns once every commit that finished before this call is on disk.
    pub(super) async fn wait(&self) -> StoreResult<()> {
        // A flush numbered above `started` now begins after this point, so
        // after the caller's commit.
        let needed = self.started.load(Ordering::SeqCst) + 1;
        let _turn = self.flushing.lock().await;
        if self.done.load(Ordering::SeqCst) >= needed {
            // The flush just before this one in line covered it.
            return Ok(());
        }
        let flush = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let (wal, flush_log) = (self.wal.clone(), self.flush);
        tokio::task::spawn_blocking(move || flush_log(&wal))
            .await
            .map_err(|e| StoreError::Durability(std::io::Error::other(e)))?
            .map_err(StoreError::Durability)?;
        self.done.store(flush, Ordering::SeqCst);
        Ok(())
    }
}

/// Returns once every commit made so far is on disk: at once where the
/// database flushes its own commits (`sync` is None).
pub(super) async fn covered(sync: Option<&WalSync>) -> StoreResult<()> {
    match sync {
        Some(sync) => sync.wait().await,
        None => Ok(()),
    }
}

/// `fdatasync` of the log. No log file means every commit was checkpointed
/// into the database file, which the checkpoint flushed.
fn flush_log(wal: &Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// The log's size and modification time: a change since the last look is
/// a commit that may not have been flushed.
fn log_stamp(wal: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(wal).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Flushes the log within a second of a change no committer waited for.
/// Ends with the store. Outside a runtime (never in soloist) there is no net,
/// and every path waits anyway.
fn spawn_safety_net(sync: Weak<WalSync>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut seen = None;
        loop {
            tokio::time::sleep(SAFETY_NET_EVERY).await;
            let Some(sync) = sync.upgrade() else { return };
            let stamp = log_stamp(&sync.wal);
            if stamp.is_some() && stamp != seen {
                if let Err(error) = sync.wait().await {
                    tracing::error!(error = ?error, "could not flush the database's log");
                    continue;
                }
                seen = stamp;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static SLOW_FLUSHES: AtomicUsize = AtomicUsize::new(0);

    fn slow_flush(_: &Path) -> std::io::Result<()> {
        SLOW_FLUSHES.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }

    /// Ten commits that finish while one flush runs are covered by one
    /// more flush, not ten: the first in line flushes for the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_made_during_a_flush_share_the_next_one() {
        let sync = Arc::new(WalSync::with_flush(PathBuf::from("unused"), slow_flush));
        let first = tokio::spawn({
            let sync = sync.clone();
            async move { sync.wait().await }
        });
        while sync.started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let during: Vec<_> = (0..10)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.wait().await })
            })
            .collect();
        first.await.unwrap().unwrap();
        for waiter in during {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(SLOW_FLUSHES.load(Ordering::SeqCst), 2);
        assert_eq!(sync.flushes(), 2);

        // One that starts after them all flushes again: none covered it.
        sync.wait().await.unwrap();
        assert_eq!(sync.flushes(), 3);
    }
}
