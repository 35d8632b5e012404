//! Delivers the outbox to a chat platform, whatever the platform.
//!
//! Every message the bot sends is an outbox row first. A [`Dispatcher`]
//! per platform claims rows with a lease (the store's `claim_outbox`: only
//! a chat's oldest pending row, so order per chat holds even with several
//! dispatchers on one database), sends each through the platform's
//! [`Deliver`], within the platform's [`RateLimits`], and marks it
//! delivered once, guarded by its claim token.
//!
//! - Fair across chats: one row per chat per round, chats that waited
//!   least recently first, so a chat with thousands queued does not delay
//!   another chat's single message.
//! - Never gives up on a transient failure: it retries with backoff capped
//!   at minutes, and after a long failure says so at error level once (the
//!   row is marked; `soloist doctor` counts such rows). Only a platform's
//!   refusal fails a row.
//! - Keeps running: a database error is retried with backoff, and a
//!   delivery that panics frees its chat and is retried.
//! - A split message stores each part's progress, so a crash mid-split
//!   sends only the parts not yet sent.
//!
//! A crash between the platform accepting a message (or a part) and the
//! row being marked can resend that one message: the platforms offer no
//! idempotency key to prevent it.

mod dispatcher;
mod pacing;

pub use dispatcher::{Dispatcher, RetryPolicy};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::Platform;
use crate::store::{OutboxMessage, Store};

/// Why a delivery failed, and so what to do next.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The platform said to wait (HTTP 429 with `retry_after`).
    #[error("rate limited by the platform; retry after {0:?}")]
    RetryAfter(Duration),
    /// Network trouble or a 5xx: try again with backoff.
    #[error("temporary delivery failure: {0}")]
    Transient(String),
    /// The platform refused for good (chat gone, bot blocked, bad request).
    #[error("the platform refused the message: {0}")]
    Permanent(String),
}

/// A platform's sending side. Adapters implement it; the dispatcher calls it.
#[async_trait::async_trait]
pub trait Deliver: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    /// Whether a chat is a group (groups have their own, lower limit).
    fn is_group(&self, _chat_id: &str) -> bool {
        false
    }

    /// Sends one message, or for a message that closes an approval edits
    /// the offers named by `offer_ids`. A message sent as several parts
    /// skips the `message.parts_sent` already sent and reports each part
    /// to `progress` as it goes. Returns the platform's id for the message
    /// (its last part), when there is one.
    async fn deliver(
        &self,
        message: &OutboxMessage,
        offer_ids: &[String],
        progress: &Progress,
    ) -> Result<Option<String>, DeliveryError>;
}

/// Where a delivery stores how many parts of its message went, so a
/// restart sends only the rest.
pub struct Progress {
    store: Option<Store>,
    id: i64,
    token: String,
}

impl Progress {
    pub(crate) fn new(store: Store, id: i64, token: String) -> Self {
        Progress {
            store: Some(store),
            id,
            token,
        }
    }

    /// Progress that is not stored (a deliverer driven outside the
    /// dispatcher, e.g. in a test).
    pub fn unrecorded() -> Self {
        Progress {
            store: None,
            id: 0,
            token: String::new(),
        }
    }

    /// Records that the first `parts_sent` parts went, the last one as
    /// `platform_message_id`. An error stops the delivery: it is retried
    /// from what was recorded (at most this one part goes twice).
    pub async fn part_sent(
        &self,
        parts_sent: usize,
        platform_message_id: &str,
    ) -> Result<(), DeliveryError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        match store
            .record_outbox_progress(self.id, &self.token, parts_sent, platform_message_id)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(DeliveryError::Transient(
                "another dispatcher holds this message now".into(),
            )),
            Err(error) => Err(DeliveryError::Transient(format!(
                "could not record the parts sent: {error}"
            ))),
        }
    }
}

/// Delivery limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// The least time between two messages to one chat.
    pub per_chat_interval: Duration,
    /// Messages per second over all chats.
    pub global_per_second: u32,
    /// Messages per minute to one group.
    pub group_per_minute: u32,
}

impl RateLimits {
    /// Telegram's documented limits are 1/s per chat, 30/s in all and
    /// 20/min per group. Kept a little under: the outbox counts a send when
    /// it starts, Telegram when it arrives, and a burst sent exactly at the
    /// limit arrives with jitter that crosses it (the bench saw 429s at
    /// exactly 30/s, none at 25/s).
    pub fn telegram() -> Self {
        RateLimits {
            per_chat_interval: Duration::from_secs(1),
            global_per_second: 25,
            group_per_minute: 18,
        }
    }

    /// Discord's limits: about 5 messages per 5 s in a channel (paced here
    /// as one a second, so a burst never trips it) and 50 requests a second
    /// for the bot. Discord has no separate group limit.
    pub fn discord() -> Self {
        RateLimits {
            per_chat_interval: Duration::from_secs(1),
            global_per_second: 50,
            group_per_minute: u32::MAX,
        }
    }

    /// No pacing at all (benchmarks against a fake server).
    pub fn unlimited() -> Self {
        RateLimits {
            per_chat_interval: Duration::ZERO,
            global_per_second: u32::MAX,
            group_per_minute: u32::MAX,
        }
    }

    /// These limits when `enabled` (a platform's `rate_limits` setting),
    /// else none.
    pub fn when(self, enabled: bool) -> Self {
        if enabled { self } else { Self::unlimited() }
    }
}

/// How often the whole outbox is read for rows nobody woke it for (queued
/// by a run this process drove without a front door, or by another process
/// while the PostgreSQL listener was reconnecting). Rows are otherwise
/// found through [`Wake`]: the chats named in memory, and on PostgreSQL
/// every process's NOTIFY.
const POLL: Duration = Duration::from_secs(1);

/// What wakes an outbox: the chats that have a row to send (so only their
/// heads are claimed, not every pending row read again), or a request to
/// read everything.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    chats: std::sync::Mutex<std::collections::HashSet<String>>,
    scan: std::sync::atomic::AtomicBool,
}

impl Wake {
    /// `chat_id` has a row queued (committed) for this platform.
    pub fn chat(&self, chat_id: &str) {
        self.lock().insert(chat_id.to_string());
        self.notify.notify_one();
    }

    /// Something may be queued anywhere: read the whole outbox.
    pub fn everything(&self) {
        self.scan.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }

    /// The chats named since the last call, and whether a full read was
    /// asked for.
    pub(crate) fn take(&self) -> (Vec<String>, bool) {
        let chats = self.lock().drain().collect();
        let scan = self.scan.swap(false, std::sync::atomic::Ordering::SeqCst);
        (chats, scan)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.chats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running outbox: wake it after queueing, wait for it at shutdown.
pub struct Outbox {
    wake: Arc<Wake>,
    task: JoinHandle<()>,
}

/// Starts delivering `deliverer`'s platform's outbox within `limits` until
/// `shutdown`. Every platform starts its outbox here; the dispatcher never
/// stops on an error (it retries), and should it panic it is started again.
pub fn start<D: Deliver>(
    store: Store,
    deliverer: Arc<D>,
    limits: RateLimits,
    shutdown: CancellationToken,
) -> Outbox {
    let wake = Arc::new(Wake::default());
    let task = tokio::spawn(supervise(store, deliverer, limits, wake.clone(), shutdown));
    Outbox { wake, task }
}

impl Outbox {
    /// Name a chat on this after queueing a message to deliver it without
    /// waiting for the next poll.
    pub fn waker(&self) -> Arc<Wake> {
        self.wake.clone()
    }

    /// Waits until the outbox has stopped (after `shutdown`).
    pub async fn stopped(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the outbox task failed");
        }
    }
}

/// Refused approval messages are shown by `soloist doctor` for a week.
const REFUSALS_SHOWN_FOR_MS: i64 = 7 * 24 * 3600 * 1000;

/// What `soloist doctor` says about delivery: None when nothing is stuck,
/// else a sentence naming what is (messages failing for longer than the
/// retry policy reports, approval messages a platform refused).
pub async fn trouble(store: &Store) -> Result<Option<String>, crate::store::StoreError> {
    let report_after = i64::try_from(RetryPolicy::default().report_after.as_millis()).unwrap_or(0);
    let now = crate::store::now_ms();
    let found = store
        .outbox_trouble(now - report_after, now - REFUSALS_SHOWN_FOR_MS)
        .await?;
    let mut problems = Vec::new();
    if found.failing > 0 {
        problems.push(format!(
            "{} message(s) have failed to deliver for over {} minutes and are still retried",
            found.failing,
            report_after / 60_000
        ));
    }
    if found.failed_approvals > 0 {
        problems.push(format!(
            "{} approval offer(s) or decision(s) were refused by the platform this week; /approvals lists what is still open",
            found.failed_approvals
        ));
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

async fn supervise<D: Deliver>(
    store: Store,
    deliverer: Arc<D>,
    limits: RateLimits,
    wake: Arc<Wake>,
    shutdown: CancellationToken,
) {
    let platform = deliverer.platform();
    loop {
        let dispatcher =
            Dispatcher::new(store.clone(), deliverer.clone(), limits).with_waker(wake.clone());
        match tokio::spawn(dispatcher.run(POLL, shutdown.clone())).await {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(platform = platform.as_str(), %error, "the outbox dispatcher failed; starting it again");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
