//! The outbox reader for one platform: claim, pace, deliver, settle.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pacing::Pacing;
use super::{Deliver, DeliveryError, Progress, RateLimits, Wake};
use crate::domain::ApprovalRole;
use crate::store::{Backend, Claim, OutboxMessage, Settlement, Store, StoreError, now_ms};

/// A claimed row waits in memory for its pace at most this long; a longer
/// wait (a group's minute, a retry-after) goes back to the database with
/// its time, so it holds no delivery slot meanwhile.
const HOLD_MAX: Duration = Duration::from_secs(2);

/// Deliveries still running at shutdown get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long failed deliveries wait before the next try, and when a long
/// failure is reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles with each failure.
    pub first: Duration,
    /// The longest wait between two tries.
    pub max: Duration,
    /// A row failing for longer than this is reported once, at error.
    pub report_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_millis(500),
            max: Duration::from_secs(5 * 60),
            report_after: Duration::from_secs(10 * 60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempts: i64) -> Duration {
        let doublings = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// The outbox reader for one platform.
pub struct Dispatcher<D: Deliver> {
    store: Store,
    deliverer: Arc<D>,
    limits: RateLimits,
    retry: RetryPolicy,
    wake: Arc<Wake>,
    /// Rows held at once (claimed, in flight or waiting for their pace).
    concurrency: usize,
    /// How long a claim lasts unless renewed; renewed every third of it.
    lease: Duration,
    owner: String,
}

impl<D: Deliver> Dispatcher<D> {
    pub fn new(store: Store, deliverer: Arc<D>, limits: RateLimits) -> Self {
        Dispatcher {
            store,
            deliverer,
            limits,
            retry: RetryPolicy::default(),
            wake: Arc::new(Wake::default()),
            concurrency: 64,
            lease: Duration::from_secs(60),
            owner: format!("outbox-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A claim lapses after `lease` unless renewed (another dispatcher may
    /// then take the row).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    pub fn with_waker(mut self, wake: Arc<Wake>) -> Self {
        self.wake = wake;
        self
    }

    /// Name a chat on this after queueing a message to deliver it without
    /// waiting for the next poll.
    pub fn waker(&self) -> Arc<Wake> {
        self.wake.clone()
    }

    /// Delivers until `shutdown`; reads the outbox every `poll` too, for
    /// rows other processes queued or that became due. Never stops on an
    /// error: a database failure is retried with backoff.
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) {
        let listening = self.listen();
        let mut run = Run::new(&self, poll);
        run.release_stale_claims().await;
        loop {
            run.step().await;
            let wake_at = run.next_wake();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                Some(joined) = run.tasks.join_next_with_id(), if !run.tasks.is_empty() => {
                    run.finished(joined);
                }
            }
        }
        if let Some(listening) = listening {
            listening.abort();
        }
        run.wind_down().await;
    }

    /// PostgreSQL: wakes this dispatcher with the chats any process queued
    /// a row for (LISTEN on the outbox channel). While the listener is down
    /// (or reconnecting, when notifications may be missed) the whole
    /// outbox is read instead.
    fn listen(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.store.backend() != Backend::Postgres {
            return None;
        }
        let store = self.store.clone();
        let wake = self.wake.clone();
        let prefix = format!("{}:", self.deliverer.platform().as_str());
        Some(tokio::spawn(async move {
            loop {
                let mut listener = match store.listen(crate::store::OUTBOX_CHANNEL).await {
                    Ok(Some(listener)) => listener,
                    Ok(None) => return,
                    Err(error) => {
                        tracing::debug!(error = ?error, "the outbox cannot listen yet; polling meanwhile");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                wake.everything();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notice)) => {
                            if let Some(chat) = notice.payload().strip_prefix(&prefix) {
                                wake.chat(chat);
                            }
                        }
                        // Reconnected: what was sent meanwhile is unknown.
                        Ok(None) => wake.everything(),
                        Err(error) => {
                            tracing::debug!(error = ?error, "the outbox listener failed; listening again");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }
}

type Delivered = Result<Option<String>, DeliveryError>;

/// A claimed row being delivered.
struct Flight {
    id: i64,
    chat: String,
    token: String,
    attempts: i64,
    failing_since: Option<i64>,
    reported: bool,
    approval: Option<ApprovalRole>,
}

/// A row's fate, waiting to be written.
struct Settling {
    chat: String,
    token: String,
    settlement: Settlement,
}

/// One run of a dispatcher: what it holds and what it must still write.
struct Run<'a, D: Deliver> {
    d: &'a Dispatcher<D>,
    pacing: Pacing,
    /// Claimed rows waiting for their pace, with their claim token.
    held: Vec<(OutboxMessage, String)>,
    running: HashMap<TaskId, Flight>,
    tasks: JoinSet<Delivered>,
    to_settle: Vec<Settling>,
    /// Chats with a row claimed here that is not settled yet.
    busy: HashSet<String>,
    /// Times at which rows this dispatcher put off become due.
    timers: BinaryHeap<Reverse<Instant>>,
    held_until: Option<Instant>,
    renew_at: Instant,
    db_failures: u32,
    db_retry_at: Option<Instant>,
    /// Chats that may have a head to claim (woken, or just settled).
    wanted: HashSet<String>,
    /// The whole outbox is read at the next claim.
    scan_due: bool,
    poll: Duration,
    last_scan: Instant,
}

impl<'a, D: Deliver> Run<'a, D> {
    fn new(d: &'a Dispatcher<D>, poll: Duration) -> Self {
        Run {
            d,
            pacing: Pacing::new(d.limits),
            held: Vec::new(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
            to_settle: Vec::new(),
            busy: HashSet::new(),
            timers: BinaryHeap::new(),
            held_until: None,
            renew_at: Instant::now() + d.lease / 3,
            db_failures: 0,
            db_retry_at: None,
            wanted: HashSet::new(),
            scan_due: true,
            poll,
            last_scan: Instant::now(),
        }
    }

    /// One process uses a SQLite file, so a claim found there at start is
    /// a dead process's: free it now rather than wait for its lease.
    async fn release_stale_claims(&mut self) {
        if self.d.store.backend() != Backend::Sqlite {
            return;
        }
        if let Err(error) = self
            .d
            .store
            .release_outbox_claims(self.d.deliverer.platform())
            .await
        {
            tracing::warn!(error = ?error, "could not free the outbox claims of a previous run; they lapse with their lease");
        }
    }

    /// Settles what finished, claims what may go, starts what is due.
    async fn step(&mut self) {
        let (chats, scan) = self.d.wake.take();
        self.wanted.extend(chats);
        let now = Instant::now();
        let timer_due = self.timers.peek().is_some_and(|Reverse(at)| *at <= now);
        if scan || timer_due || now >= self.last_scan + self.poll {
            self.scan_due = true;
        }
        if self.db_retry_at.is_some_and(|at| at > Instant::now()) {
            self.dispatch();
            return;
        }
        let result = self.database_step().await;
        match result {
            Ok(()) => {
                if self.db_failures > 0 {
                    tracing::info!("the outbox reaches the database again");
                }
                self.db_failures = 0;
                self.db_retry_at = None;
            }
            Err(error) => self.database_failed(&error),
        }
        self.dispatch();
    }

    async fn database_step(&mut self) -> Result<(), StoreError> {
        self.settle().await?;
        if Instant::now() >= self.renew_at {
            let platform = self.d.deliverer.platform();
            self.d
                .store
                .renew_outbox_claims(platform, &self.d.owner, self.d.lease)
                .await?;
            self.renew_at = Instant::now() + self.d.lease / 3;
        }
        self.claim().await
    }

    /// Claims as many rows as there is room for.
    async fn claim(&mut self) -> Result<(), StoreError> {
        let room = self
            .d
            .concurrency
            .saturating_sub(self.running.len() + self.held.len());
        if room == 0 || (!self.scan_due && self.wanted.is_empty()) {
            return Ok(());
        }
        let claim = Claim {
            owner: self.d.owner.clone(),
            token: uuid::Uuid::new_v4().simple().to_string(),
        };
        let platform = self.d.deliverer.platform();
        let claimed = if self.scan_due {
            let claimed = self
                .d
                .store
                .claim_outbox(platform, &claim, self.d.lease, room)
                .await?;
            self.scan_due = false;
            self.last_scan = Instant::now();
            self.wanted.clear();
            claimed
        } else {
            // Chats this dispatcher is delivering to are asked again once
            // their row settles.
            let chats: Vec<String> = self
                .wanted
                .iter()
                .filter(|chat| !self.busy.contains(*chat))
                .take(room)
                .cloned()
                .collect();
            for chat in &chats {
                self.wanted.remove(chat);
            }
            self.d
                .store
                .claim_outbox_chats(platform, &claim, self.d.lease, &chats)
                .await?
        };
        for message in claimed {
            if !self.busy.insert(message.chat.chat_id.clone()) {
                // Only after our own lease lapsed (a long database outage):
                // the earlier delivery of this chat settles first.
                tracing::warn!(
                    outbox = message.id,
                    "a row this dispatcher still holds was claimed again; skipped"
                );
                continue;
            }
            self.held.push((message, claim.token.clone()));
        }
        Ok(())
    }

    /// Starts every held row whose chat may be sent to now; puts rows with
    /// a long wait back in the database.
    fn dispatch(&mut self) {
        let now = Instant::now();
        self.held_until = None;
        self.held.sort_by_key(|(message, _)| message.id);
        for (message, token) in std::mem::take(&mut self.held) {
            let chat = message.chat.chat_id.clone();
            let group = self.d.deliverer.is_group(&chat);
            match self.pacing.when_allowed(&chat, group, now) {
                None => {
                    self.pacing.note_send(&chat, group, now);
                    self.start(message, token);
                }
                Some(at) if at.saturating_duration_since(now) <= HOLD_MAX => {
                    self.held_until = Some(self.held_until.map_or(at, |h| h.min(at)));
                    self.held.push((message, token));
                }
                Some(at) => {
                    self.timers.push(Reverse(at));
                    self.to_settle.push(Settling {
                        chat,
                        token,
                        settlement: Settlement::Retry {
                            id: message.id,
                            at: now_ms() + millis(at.saturating_duration_since(now)),
                            failure: None,
                            report: false,
                        },
                    });
                }
            }
        }
        self.pacing.forget_past(now);
    }

    fn start(&mut self, message: OutboxMessage, token: String) {
        let flight = Flight {
            id: message.id,
            chat: message.chat.chat_id.clone(),
            token: token.clone(),
            attempts: message.attempts,
            failing_since: message.failing_since,
            reported: message.reported,
            approval: message.message.approval.map(|link| link.role),
        };
        let store = self.d.store.clone();
        let deliverer = self.d.deliverer.clone();
        let progress = Progress::new(store.clone(), message.id, token);
        let limits = self.d.limits;
        let group = deliverer.is_group(&message.chat.chat_id);
        let handle = self.tasks.spawn(async move {
            let platform = deliverer.platform();
            super::pacing::shared_slot(
                &store,
                platform.as_str(),
                &message.chat.chat_id,
                group,
                limits,
            )
            .await;
            let mut message = message;
            // A stored file is loaded here, once for every platform.
            store
                .load_attachment(&mut message.message)
                .await
                .map_err(|e| DeliveryError::Transient(format!("reading the attachment: {e}")))?;
            let offer_ids = match message.message.approval {
                Some(link) if link.role == ApprovalRole::Closed => store
                    .offer_message_ids(link.id, &message.chat)
                    .await
                    .map_err(|e| DeliveryError::Transient(format!("reading the offers: {e}")))?,
                _ => Vec::new(),
            };
            deliverer.deliver(&message, &offer_ids, &progress).await
        });
        self.running.insert(handle.id(), flight);
    }

    /// A delivery task ended: with a result, or by panicking (its chat is
    /// freed and the row retried like any transient failure).
    fn finished(&mut self, joined: Result<(TaskId, Delivered), JoinError>) {
        self.record(joined);
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            self.record(joined);
        }
    }

    fn record(&mut self, joined: Result<(TaskId, Delivered), JoinError>) {
        let (task, result) = match joined {
            Ok(done) => done,
            Err(error) => (
                error.id(),
                Err(DeliveryError::Transient(format!(
                    "the delivery task failed: {error}"
                ))),
            ),
        };
        let Some(flight) = self.running.remove(&task) else {
            return;
        };
        let settlement = self.settlement(&flight, result);
        self.to_settle.push(Settling {
            chat: flight.chat,
            token: flight.token,
            settlement,
        });
    }

    /// What a delivery's result means for its row.
    fn settlement(&mut self, flight: &Flight, result: Delivered) -> Settlement {
        let now = Instant::now();
        let id = flight.id;
        match result {
            Ok(platform_message_id) => {
                let pace = self.d.limits.per_chat_interval;
                let chat_pace_until = (!pace.is_zero()).then(|| {
                    self.timers.push(Reverse(now + pace));
                    now_ms() + millis(pace)
                });
                Settlement::Delivered {
                    id,
                    chat: crate::domain::ChatRef::new(
                        self.d.deliverer.platform(),
                        flight.chat.clone(),
                    ),
                    platform_message_id,
                    chat_pace_until,
                }
            }
            Err(DeliveryError::RetryAfter(wait)) => {
                let wait = crate::retry_after::cap(wait);
                tracing::warn!(chat = %flight.chat, ?wait, "platform asked to slow down");
                self.pacing.hold(&flight.chat, now + wait);
                self.timers.push(Reverse(now + wait));
                Settlement::Retry {
                    id,
                    at: now_ms() + millis(wait),
                    failure: None,
                    report: false,
                }
            }
            Err(DeliveryError::Transient(reason)) => self.retry_later(flight, reason, now),
            Err(error @ DeliveryError::Permanent(_)) => {
                match flight.approval {
                    Some(role) => tracing::error!(
                        chat = %flight.chat, outbox = id, %error,
                        "an approval {} could not be delivered and is given up; the approval stays open in /approvals",
                        if role == ApprovalRole::Offer { "offer" } else { "decision" }
                    ),
                    None => {
                        tracing::error!(chat = %flight.chat, outbox = id, %error, "giving up on a message")
                    }
                }
                Settlement::Failed {
                    id,
                    reason: error.to_string(),
                }
            }
        }
    }

    /// A transient failure: try again after a backoff capped at minutes,
    /// whatever the count; say it once at error when it has lasted long.
    fn retry_later(&mut self, flight: &Flight, reason: String, now: Instant) -> Settlement {
        let backoff = self.d.retry.backoff(flight.attempts);
        let failing_for = flight
            .failing_since
            .map(|since| Duration::from_millis(u64::try_from(now_ms() - since).unwrap_or(0)));
        let report = !flight.reported
            && failing_for.is_some_and(|lasted| lasted >= self.d.retry.report_after);
        if report {
            let what = match flight.approval {
                Some(ApprovalRole::Offer) => "an approval offer",
                Some(ApprovalRole::Closed) => "an approval's decision",
                None => "a message",
            };
            tracing::error!(
                chat = %flight.chat, outbox = flight.id, attempts = flight.attempts + 1, %reason,
                "{what} has not been delivered for {:?}; still retrying (soloist doctor counts such messages)",
                failing_for.unwrap_or_default()
            );
        } else {
            tracing::warn!(chat = %flight.chat, %reason, ?backoff, "delivery failed; will retry");
        }
        self.timers.push(Reverse(now + backoff));
        Settlement::Retry {
            id: flight.id,
            at: now_ms() + millis(backoff),
            failure: Some(reason),
            report,
        }
    }

    /// Writes every finished row's fate in one transaction; on an error the
    /// fates stay queued (their chats stay held) and are written later.
    async fn settle(&mut self) -> Result<(), StoreError> {
        if self.to_settle.is_empty() {
            return Ok(());
        }
        let batch: Vec<(String, Settlement)> = self
            .to_settle
            .iter()
            .map(|s| (s.token.clone(), s.settlement.clone()))
            .collect();
        let lost = self.d.store.settle_outbox(&batch).await?;
        for id in lost {
            tracing::warn!(
                outbox = id,
                "another dispatcher took this row after our lease lapsed; it may have gone twice"
            );
        }
        for settled in std::mem::take(&mut self.to_settle) {
            self.busy.remove(&settled.chat);
            // Its next row, if any, may go now (a retry waits for its timer).
            if !matches!(settled.settlement, Settlement::Retry { .. }) {
                self.wanted.insert(settled.chat);
            }
        }
        Ok(())
    }

    fn database_failed(&mut self, error: &StoreError) {
        let wait = Duration::from_millis(250 * 2u64.pow(self.db_failures.min(7)))
            .min(Duration::from_secs(30));
        if self.db_failures == 0 {
            tracing::error!(error = ?error, "the outbox cannot use the database; retrying with backoff");
        } else {
            tracing::debug!(error = ?error, ?wait, "the outbox still cannot use the database");
        }
        self.db_failures += 1;
        self.db_retry_at = Some(Instant::now() + wait);
    }

    /// When the loop must look again, at the latest after `poll`.
    fn next_wake(&mut self) -> Instant {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|Reverse(at)| *at <= now) {
            self.timers.pop();
        }
        let mut wake = self.last_scan + self.poll;
        let room = self.running.len() + self.held.len() < self.d.concurrency;
        let claimable = self.wanted.iter().any(|chat| !self.busy.contains(chat));
        let candidates = [
            self.held_until,
            self.timers.peek().map(|Reverse(at)| *at),
            self.db_retry_at,
            Some(self.renew_at),
            (!self.to_settle.is_empty() && self.db_retry_at.is_none()).then_some(now),
            (room && claimable && self.db_retry_at.is_none()).then_some(now),
        ];
        for at in candidates.into_iter().flatten() {
            wake = wake.min(at);
        }
        wake
    }

    /// Shutdown: no new claims; rows waiting go back; deliveries under way
    /// get a moment to finish and be recorded. A delivery cut short leaves
    /// its claim to lapse (SQLite: freed at the next start).
    async fn wind_down(&mut self) {
        for (message, token) in std::mem::take(&mut self.held) {
            self.to_settle.push(Settling {
                chat: message.chat.chat_id.clone(),
                token,
                settlement: Settlement::Retry {
                    id: message.id,
                    at: 0,
                    failure: None,
                    report: false,
                },
            });
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => self.record(joined),
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
        if let Err(error) = self.settle().await {
            tracing::warn!(error = ?error, "could not record the last deliveries; a restart may send them again");
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
