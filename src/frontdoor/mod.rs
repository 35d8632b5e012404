//! The front door: every platform's updates take the same way in.
//!
//! record → per-chat lane → controller → wake delivery
//!
//! 1. An adapter parses what its platform sent into [`Arrival`]s (an
//!    [`Inbound`] plus what only the platform needs later, such as the
//!    callback to answer) and hands them to [`FrontDoor::record`]. They
//!    are stored in `platform_updates` before the platform is told they
//!    arrived; a stranger's text is stored only as its length and hash
//!    ([`crate::controller::access`]). A redelivered update is recorded
//!    once.
//! 2. [`FrontDoor::queue`] puts each fresh update in its chat's lane: one
//!    chat's updates in order, chats in parallel, bounded ([`Bounds`]).
//! 3. A lane hands the update to the [`Controller`]. A failure is tried
//!    again a few times with backoff; an update that keeps failing is
//!    marked failed (never handled, never dropped silently) and the sender
//!    is told. Only a success marks it handled.
//! 4. The outbox is woken with the chat: the controller queued the
//!    replies in the same transaction that finished the update. "Handled"
//!    marks are written in groups ([`Marks`]).
//!
//! Commits on the way of a command that only reads (`/help`): the batch of
//! raw updates with their inbound rows (one per `getUpdates`, whatever its
//! size), the answer (inbound handled + replies queued, one), the grouped
//! handled marks, the outbox's grouped claims and settlements.
//!
//! What differs between platforms ("typing…", a button's toast, telling
//! the sender when the outbox itself may be down) is a [`Side`]. A new
//! platform is a parser, a renderer and a client: it implements [`Side`],
//! builds [`Arrival`]s and delivers the outbox.

mod lanes;
pub mod text;

pub use lanes::{Bounds, Lanes};
pub use text::{error_chain, utf16_len};

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::controller::{Controller, ControllerError, Outcome, access};
use crate::domain::{Inbound, InboundContent, Platform};
use crate::outbox::Wake;
use crate::store::{RecordedUpdate, Store, StoreError, now_ms};

/// How many times an update is handed to the controller before it is
/// marked failed, and the wait before each retry.
pub const ATTEMPTS: u32 = 4;
const RETRY_AFTER: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(4),
];

/// What every adapter needs from the rest of soloist: no more than this
/// (not the whole `App`).
#[derive(Clone)]
pub struct Handles {
    pub store: Store,
    pub controller: Controller,
    pub settings: Arc<Settings>,
    /// Where the adapter reports whether it is connected (`/healthz`).
    pub health: crate::http::Health,
    /// Where the adapter mounts routes on the shared HTTP server.
    pub hooks: crate::http::Hooks,
}

impl Handles {
    pub fn of(app: &crate::app::App) -> Self {
        Handles {
            store: app.store.clone(),
            controller: app.controller.clone(),
            settings: app.settings.clone(),
            health: app.health.clone(),
            hooks: app.hooks.clone(),
        }
    }
}

/// One update as it came in: what the controller acts on, and what the
/// platform needs to finish it (`extra`), under the platform's update id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "E: Serialize + DeserializeOwned")]
pub struct Arrival<E> {
    pub update_id: i64,
    pub inbound: Inbound,
    pub extra: E,
}

/// What a platform does around the controller.
pub trait Side: Send + Sync + 'static {
    /// Platform data kept with a recorded update (answered after handling).
    type Extra: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    fn platform(&self) -> Platform;

    /// A sign that work is under way ("typing…"), started as handling
    /// starts and aborted when it ends. None by default.
    fn working(&self, _arrival: &Arrival<Self::Extra>) -> Option<JoinHandle<()>> {
        None
    }

    /// The platform's own answer after handling (Telegram's button toast).
    fn answered(
        &self,
        arrival: &Arrival<Self::Extra>,
        result: &Result<Outcome, ControllerError>,
    ) -> impl Future<Output = ()> + Send;

    /// Says `text` to the sender directly, not through the outbox (which
    /// may be what failed).
    fn tell(&self, arrival: &Arrival<Self::Extra>, text: &str) -> impl Future<Output = ()> + Send;
}

/// The front door of one platform.
pub struct FrontDoor<S: Side> {
    handles: Handles,
    lanes: Arc<Lanes<Arrival<S::Extra>>>,
}

impl<S: Side> FrontDoor<S> {
    /// A front door whose lanes run until `shutdown`; `wake` is the
    /// outbox's (told the chat once an update's replies are queued).
    pub fn new(
        handles: Handles,
        side: S,
        wake: Arc<Wake>,
        bounds: Bounds,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let marks = Marks::start(handles.store.clone(), side.platform(), shutdown.clone());
        let worker = Arc::new(Worker {
            handles: handles.clone(),
            side,
            wake,
            marks,
            shutdown: shutdown.clone(),
        });
        let lanes = Lanes::new(
            move |arrival| {
                let worker = worker.clone();
                async move { worker.handle(arrival).await }
            },
            bounds,
            shutdown,
        );
        Arc::new(FrontDoor { handles, lanes })
    }

    pub fn handles(&self) -> &Handles {
        &self.handles
    }

    /// Records `arrivals` in one transaction; returns those not recorded
    /// before. When this returns Ok they are durable and the platform may
    /// be told they arrived.
    pub async fn record(
        &self,
        platform: Platform,
        arrivals: Vec<Arrival<S::Extra>>,
    ) -> Result<Vec<Arrival<S::Extra>>, StoreError> {
        let arrivals: Vec<Arrival<S::Extra>> = arrivals
            .into_iter()
            .map(|arrival| self.keepable(arrival))
            .collect();
        let mut records = Vec::with_capacity(arrivals.len());
        for arrival in &arrivals {
            let record = RecordedUpdate {
                update_id: arrival.update_id,
                chat_id: arrival.inbound.chat.chat_id.clone(),
                payload: serde_json::to_string(arrival)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            };
            records.push((record, storable(&arrival.inbound)));
        }
        let store = &self.handles.store;
        let recorded = match store.record_arrivals(platform, &records).await {
            Ok(recorded) => recorded,
            // One inbound the store refuses must not hold up the batch (a
            // poison update): the raw updates alone are what must be
            // durable; the controller records each inbound as it handles it.
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "could not record the inbound with the raw updates; recording the raw updates alone");
                let raw: Vec<RecordedUpdate> = records.into_iter().map(|(r, _)| r).collect();
                store.record_updates(platform, &raw).await?
            }
        };
        let fresh: HashSet<i64> = recorded.into_iter().map(|r| r.update_id).collect();
        Ok(arrivals
            .into_iter()
            .filter(|a| {
                let new = fresh.contains(&a.update_id);
                if !new {
                    tracing::debug!(update = a.update_id, "redelivered update dropped");
                }
                new
            })
            .collect())
    }

    /// Queues recorded arrivals to their chats' lanes (waits while the
    /// lanes are full).
    pub async fn queue(&self, arrivals: Vec<Arrival<S::Extra>>) {
        for arrival in arrivals {
            let chat = arrival.inbound.chat.chat_id.clone();
            if !self.lanes.push(&chat, arrival).await {
                return;
            }
        }
    }

    /// [`FrontDoor::record`], then [`FrontDoor::queue`].
    pub async fn accept(
        &self,
        platform: Platform,
        arrivals: Vec<Arrival<S::Extra>>,
    ) -> Result<(), StoreError> {
        let fresh = self.record(platform, arrivals).await?;
        self.queue(fresh).await;
        Ok(())
    }

    /// Queues updates recorded before a restart but never finished; one
    /// that cannot be read any more is marked failed.
    pub async fn replay_unhandled(&self, platform: Platform) -> Result<(), StoreError> {
        let store = &self.handles.store;
        for record in store.unhandled_updates(platform).await? {
            match serde_json::from_str::<Arrival<S::Extra>>(&record.payload) {
                Ok(arrival) => self.queue(vec![arrival]).await,
                Err(error) => {
                    tracing::error!(update = record.update_id, %error, "an unreadable recorded update is marked failed");
                    store
                        .mark_update_failed(platform, record.update_id, 0)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Empties the raw payloads of finished updates older than
    /// `keep_hours`.
    pub async fn forget_old_payloads(
        &self,
        platform: Platform,
        keep_hours: u32,
    ) -> Result<u64, StoreError> {
        let before = now_ms() - i64::from(keep_hours) * 3600 * 1000;
        self.handles.store.forget_payloads(platform, before).await
    }

    /// The arrival as far as it may be stored: a stranger's text becomes
    /// its length and hash before it reaches the database.
    fn keepable(&self, mut arrival: Arrival<S::Extra>) -> Arrival<S::Extra> {
        let access = access::decide(&self.handles.settings, &arrival.inbound);
        arrival.inbound = access::keepable(access, &arrival.inbound);
        arrival
    }
}

/// The inbound as the controller records it (PostgreSQL text cannot hold
/// NUL), so recording it with the raw update changes nothing it would.
fn storable(inbound: &Inbound) -> Inbound {
    match &inbound.content {
        InboundContent::Text(text) if text.contains('\0') => Inbound {
            content: InboundContent::Text(text.replace('\0', "")),
            ..inbound.clone()
        },
        _ => inbound.clone(),
    }
}

/// Handles one update in its lane.
struct Worker<S: Side> {
    handles: Handles,
    side: S,
    wake: Arc<Wake>,
    marks: Arc<Marks>,
    shutdown: CancellationToken,
}

/// "Handled" marks, written together: one statement for every update
/// handled since the last one, not one commit each. A mark lost in a crash
/// only makes the restart hand that update to the controller again, which
/// finds it done and drops it.
struct Marks {
    handled: std::sync::Mutex<Vec<i64>>,
    news: tokio::sync::Notify,
}

impl Marks {
    fn start(store: Store, platform: Platform, shutdown: CancellationToken) -> Arc<Marks> {
        let marks = Arc::new(Marks {
            handled: std::sync::Mutex::new(Vec::new()),
            news: tokio::sync::Notify::new(),
        });
        let writer = marks.clone();
        tokio::spawn(async move { writer.write(store, platform, shutdown).await });
        marks
    }

    fn handled(&self, update_id: i64) {
        self.lock().push(update_id);
        self.news.notify_one();
    }

    async fn write(&self, store: Store, platform: Platform, shutdown: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = self.news.notified() => false,
            };
            let ids = std::mem::take(&mut *self.lock());
            if !ids.is_empty()
                && let Err(error) = store.mark_updates_handled(platform, &ids).await
            {
                tracing::warn!(error = %error_chain(&error), "could not mark updates handled; will try again (a restart finds them done)");
                self.lock().extend(ids);
                tokio::time::sleep(Duration::from_millis(250)).await;
                self.news.notify_one();
            }
            if stopping {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<i64>> {
        self.handled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: Side> Worker<S> {
    #[tracing::instrument(skip_all, fields(platform = %self.side.platform(), update = arrival.update_id))]
    async fn handle(&self, arrival: Arrival<S::Extra>) {
        let working = self.side.working(&arrival);
        let (result, attempts) = self.attempt(&arrival).await;
        if let Some(working) = working {
            working.abort();
        }
        self.wake.chat(&arrival.inbound.chat.chat_id);
        self.side.answered(&arrival, &result).await;
        let store = &self.handles.store;
        let platform = self.side.platform();
        let marked = match &result {
            Ok(_) => {
                self.marks.handled(arrival.update_id);
                Ok(())
            }
            Err(error) => {
                tracing::error!(error = %error_chain(error), attempts, "an update failed every attempt; marked failed");
                let text = format!(
                    "{} (I tried {attempts} times and have set this message aside.)",
                    error.user_message()
                );
                // Recorded as failed before the sender hears of it, so what
                // they are told is already true.
                let marked = store
                    .mark_update_failed(platform, arrival.update_id, attempts)
                    .await;
                self.side.tell(&arrival, &text).await;
                marked
            }
        };
        if let Err(error) = marked {
            tracing::error!(error = %error_chain(&error), "could not mark an update finished; a restart handles it again (the controller drops it if done)");
        }
    }

    /// The controller's answer, tried again after a failure while attempts
    /// are left (the controller records what it finished, so a retry does
    /// not repeat it); with the number of attempts made.
    async fn attempt(
        &self,
        arrival: &Arrival<S::Extra>,
    ) -> (Result<Outcome, ControllerError>, u32) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.handles.controller.handle(&arrival.inbound).await;
            let Err(error) = &result else {
                return (result, attempts);
            };
            let Some(wait) = RETRY_AFTER.get(attempts as usize - 1).copied() else {
                return (result, attempts);
            };
            tracing::warn!(error = %error_chain(error), attempts, "handling an update failed; trying again");
            tokio::select! {
                _ = self.shutdown.cancelled() => return (result, attempts),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_retry_has_a_wait_and_the_attempts_are_bounded() {
        assert_eq!(RETRY_AFTER.len() as u32, ATTEMPTS - 1);
        let total: Duration = RETRY_AFTER.iter().sum();
        assert!(total < Duration::from_secs(10), "{total:?}");
    }
}
