//! Delivers the outbox to a chat platform, whatever the platform: oldest
//! first, one message in flight per chat so each chat's order is kept,
//! within the platform's rate limits, honouring `retry after`, retrying
//! network errors with backoff, and marking each row delivered once the
//! platform accepted it.
//!
//! One dispatcher per platform per deployment (the process that polls the
//! platform runs it). A crash between the platform accepting a message and
//! the row being marked can resend that one message: the platforms offer no
//! idempotency key to prevent it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::Platform;
use crate::store::{OutboxMessage, Store, StoreError};

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
    /// the offers named by `offer_ids`. Returns the platform's id for the
    /// message sent, when there is one.
    async fn deliver(
        &self,
        message: &OutboxMessage,
        offer_ids: &[String],
    ) -> Result<Option<String>, DeliveryError>;
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
    /// Attempts before a message that keeps failing transiently is given up.
    pub max_attempts: u32,
}

impl RateLimits {
    /// Telegram's documented limits.
    pub fn telegram() -> Self {
        RateLimits {
            per_chat_interval: Duration::from_secs(1),
            global_per_second: 30,
            group_per_minute: 20,
            max_attempts: 8,
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
            max_attempts: 8,
        }
    }

    /// No pacing at all (benchmarks against a fake server).
    pub fn unlimited() -> Self {
        RateLimits {
            per_chat_interval: Duration::ZERO,
            global_per_second: u32::MAX,
            group_per_minute: u32::MAX,
            max_attempts: 8,
        }
    }
}

/// The outbox reader for one platform.
pub struct Dispatcher<D: Deliver> {
    store: Store,
    deliverer: Arc<D>,
    limits: RateLimits,
    wake: Arc<Notify>,
    /// Deliveries in flight at once (across chats).
    concurrency: usize,
}

struct Outcome {
    id: i64,
    chat_id: String,
    result: Result<Option<String>, DeliveryError>,
    attempts: i64,
}

/// Pacing state: when each chat may next be sent to, and the recent sends.
#[derive(Default)]
struct Pacing {
    next_allowed: HashMap<String, Instant>,
    recent: VecDeque<Instant>,
    group_recent: HashMap<String, VecDeque<Instant>>,
    in_flight: HashSet<String>,
}

impl<D: Deliver> Dispatcher<D> {
    pub fn new(store: Store, deliverer: Arc<D>, limits: RateLimits) -> Self {
        Dispatcher {
            store,
            deliverer,
            limits,
            wake: Arc::new(Notify::new()),
            concurrency: 64,
        }
    }

    /// Notify this after queueing a message to deliver it without waiting
    /// for the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Delivers until `shutdown`; polls the outbox every `poll` too, for
    /// rows other processes queued.
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) -> Result<(), StoreError> {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
        let mut pacing = Pacing::default();
        loop {
            let next_wake = self.start_eligible(&mut pacing, &permits, &done_tx).await?;
            let sleep_until = next_wake
                .unwrap_or_else(|| Instant::now() + poll)
                .min(Instant::now() + poll);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(sleep_until) => {}
                Some(outcome) = done_rx.recv() => {
                    let mut outcomes = vec![outcome];
                    while let Ok(outcome) = done_rx.try_recv() {
                        outcomes.push(outcome);
                    }
                    self.settle_all(&mut pacing, outcomes).await?;
                }
            }
        }
    }

    /// Starts a delivery for every chat whose next message may go now.
    /// Returns when the next held-back message may go.
    async fn start_eligible(
        &self,
        pacing: &mut Pacing,
        permits: &Arc<Semaphore>,
        done: &mpsc::UnboundedSender<Outcome>,
    ) -> Result<Option<Instant>, StoreError> {
        let pending = self
            .store
            .pending_outbox(self.deliverer.platform(), 1000)
            .await?;
        let now = Instant::now();
        let mut next_wake: Option<Instant> = None;
        let mut seen_chats = HashSet::new();
        for message in pending {
            // Only a chat's oldest pending message may go: order per chat.
            if !seen_chats.insert(message.chat.chat_id.clone()) {
                continue;
            }
            if pacing.in_flight.contains(&message.chat.chat_id) {
                continue;
            }
            if let Some(later) = self.when_allowed(pacing, &message.chat.chat_id, now) {
                next_wake = Some(next_wake.map_or(later, |w| w.min(later)));
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            self.note_send(pacing, &message.chat.chat_id, now);
            let offer_ids = match message.message.approval {
                Some(link) if link.role == crate::domain::ApprovalRole::Closed => {
                    self.store.offer_message_ids(link.id, &message.chat).await?
                }
                _ => Vec::new(),
            };
            let deliverer = self.deliverer.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let result = deliverer.deliver(&message, &offer_ids).await;
                drop(permit);
                let _ = done.send(Outcome {
                    id: message.id,
                    chat_id: message.chat.chat_id.clone(),
                    result,
                    attempts: message.attempts,
                });
            });
        }
        Ok(next_wake)
    }

    /// None when a message to `chat` may go at `now`; else when it may.
    fn when_allowed(&self, pacing: &mut Pacing, chat: &str, now: Instant) -> Option<Instant> {
        let limits = &self.limits;
        if let Some(at) = pacing.next_allowed.get(chat).filter(|at| **at > now) {
            return Some(*at);
        }
        let second_ago = now - Duration::from_secs(1);
        while pacing.recent.front().is_some_and(|t| *t <= second_ago) {
            pacing.recent.pop_front();
        }
        if limits.global_per_second != u32::MAX
            && pacing.recent.len() >= limits.global_per_second as usize
        {
            return pacing.recent.front().map(|t| *t + Duration::from_secs(1));
        }
        if self.deliverer.is_group(chat) && limits.group_per_minute != u32::MAX {
            let minute_ago = now - Duration::from_secs(60);
            let sent = pacing.group_recent.entry(chat.to_string()).or_default();
            while sent.front().is_some_and(|t| *t <= minute_ago) {
                sent.pop_front();
            }
            if sent.len() >= limits.group_per_minute as usize {
                return sent.front().map(|t| *t + Duration::from_secs(60));
            }
        }
        None
    }

    fn note_send(&self, pacing: &mut Pacing, chat: &str, now: Instant) {
        pacing.in_flight.insert(chat.to_string());
        if self.limits.global_per_second != u32::MAX {
            pacing.recent.push_back(now);
        }
        if self.deliverer.is_group(chat) && self.limits.group_per_minute != u32::MAX {
            pacing
                .group_recent
                .entry(chat.to_string())
                .or_default()
                .push_back(now);
        }
        if !self.limits.per_chat_interval.is_zero() {
            pacing
                .next_allowed
                .insert(chat.to_string(), now + self.limits.per_chat_interval);
        }
    }

    /// Records deliveries that finished together: the delivered ones in one
    /// transaction (under load, one commit instead of one per message),
    /// then each failure.
    async fn settle_all(
        &self,
        pacing: &mut Pacing,
        outcomes: Vec<Outcome>,
    ) -> Result<(), StoreError> {
        let (delivered, failed): (Vec<Outcome>, Vec<Outcome>) =
            outcomes.into_iter().partition(|o| o.result.is_ok());
        let marks: Vec<(i64, Option<String>)> = delivered
            .iter()
            .map(|o| (o.id, o.result.as_ref().ok().cloned().flatten()))
            .collect();
        if !marks.is_empty() {
            self.store.mark_delivered_many(&marks).await?;
        }
        for outcome in delivered {
            pacing.in_flight.remove(&outcome.chat_id);
        }
        for outcome in failed {
            self.settle(pacing, outcome).await?;
        }
        Ok(())
    }

    /// Records a finished delivery: delivered, retried later, or given up.
    async fn settle(&self, pacing: &mut Pacing, outcome: Outcome) -> Result<(), StoreError> {
        pacing.in_flight.remove(&outcome.chat_id);
        match outcome.result {
            Ok(platform_id) => {
                self.store
                    .mark_delivered(outcome.id, platform_id.as_deref())
                    .await?;
            }
            Err(DeliveryError::RetryAfter(wait)) => {
                tracing::warn!(chat = %outcome.chat_id, ?wait, "platform asked to slow down");
                pacing
                    .next_allowed
                    .insert(outcome.chat_id, Instant::now() + wait);
            }
            Err(DeliveryError::Transient(reason))
                if outcome.attempts + 1 < i64::from(self.limits.max_attempts) =>
            {
                let backoff =
                    Duration::from_millis(250 * 2u64.pow(outcome.attempts.clamp(0, 8) as u32));
                tracing::warn!(chat = %outcome.chat_id, %reason, ?backoff, "delivery failed; will retry");
                self.store.record_attempt(outcome.id).await?;
                pacing
                    .next_allowed
                    .insert(outcome.chat_id, Instant::now() + backoff);
            }
            Err(error) => {
                tracing::error!(chat = %outcome.chat_id, %error, "giving up on a message");
                self.store
                    .mark_failed(outcome.id, &error.to_string())
                    .await?;
            }
        }
        Ok(())
    }
}
