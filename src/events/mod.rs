//! The event worker: flows react to each other without a central script.
//! A flow file that says `on = "lead.received"` is started once for every
//! event of that kind ([`crate::store::events`] stores them, each written
//! in the transaction of the change that caused it). The worker claims a
//! pending event, starts every subscribing flow in one transaction (the run
//! keyed on the event and flow, and `event_runs` unique on both, so two
//! workers, a retry or a restart start it once), marks the event done, then
//! drives the new runs.
//!
//! Where a run sees its event: the run's input carries it
//! ([`crate::domain::RunInput::event`]: id, kind, payload), its request is
//! the payload as JSON, and every prompt template gets `event` (`{{
//! event.kind }}`, `{{ event.payload.name }}`), its strings quoted as
//! untrusted data like the request.

use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::domain::{ChatRef, Platform, RunId};
use crate::engine::{Engine, EngineError, StartRun};
use crate::store::events::ClaimedEvent;

/// `[events]` in settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// How often the worker looks for new events.
    pub poll_secs: f64,
    /// How long a claimed event is held before another worker may take it.
    pub claim_secs: f64,
    /// A failed run also tells the owner's chats (see
    /// [`crate::digest::owner_chats`]) when it ran elsewhere.
    pub notify_run_failed: bool,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            poll_secs: 2.0,
            claim_secs: 60.0,
            notify_run_failed: true,
        }
    }
}

/// Claims events and starts the flows that subscribe to them.
#[derive(Debug, Clone)]
pub struct EventWorker {
    engine: Engine,
    worker: String,
}

impl EventWorker {
    pub fn new(engine: Engine) -> EventWorker {
        EventWorker {
            engine,
            worker: format!("events-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Handles every pending event; returns the runs it started (already
    /// driven until they wait or finish).
    pub async fn tick(&self) -> Result<Vec<RunId>, EngineError> {
        let store = self.engine.store();
        let lease_ms = (self.engine.settings().events.claim_secs * 1000.0).max(1.0) as i64;
        let mut started = Vec::new();
        loop {
            let token = format!("{}:{}", self.worker, uuid::Uuid::new_v4().simple());
            let Some(claimed) = store.claim_event(&token, lease_ms).await? else {
                break;
            };
            started.extend(self.start_subscribers(&claimed).await?);
        }
        for run in &started {
            if let Err(error) = self.engine.drive(*run).await {
                tracing::error!(error = ?error, %run, "driving a run an event started failed");
            }
        }
        Ok(started)
    }

    /// Starts each flow that subscribes to the event, once, and marks the
    /// event done, all in one transaction.
    async fn start_subscribers(&self, claimed: &ClaimedEvent) -> Result<Vec<RunId>, EngineError> {
        let event = &claimed.event;
        let flows: Vec<String> = self
            .engine
            .flows()
            .subscribers(&event.kind)
            .map(str::to_string)
            .collect();
        let chat = operator_chat(self.engine.settings());
        let mut tx = self.engine.store().begin().await?;
        let mut started = Vec::new();
        for flow in flows {
            let start = StartRun {
                flow: flow.clone(),
                chat: chat.clone(),
                request: event.payload.to_string(),
                requested_by: format!("event {}", event.kind),
                idempotency_key: format!("event:{}:{flow}", event.id),
            };
            let run = self.engine.start_event_in(&mut tx, start, event).await?;
            if tx.record_event_run(&event.id, &flow, run).await? {
                tracing::info!(event = %event.id, kind = %event.kind, %flow, %run, "event started a run");
                started.push(run);
            }
        }
        if !tx.finish_event(claimed).await? {
            // Our claim lapsed and another worker holds the event: it
            // starts the same runs (same keys), so ours must not commit.
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        tx.commit().await?;
        Ok(started)
    }

    /// Polls until `shutdown`.
    pub async fn service(self, shutdown: CancellationToken) -> Result<(), String> {
        let every =
            Duration::from_secs_f64(self.engine.settings().events.poll_secs.clamp(0.05, 3600.0));
        loop {
            if let Err(error) = self.tick().await {
                tracing::warn!(error = ?error, "event round failed; will try again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// The chat runs started by events report to: the owner's first chat, or
/// the console when no owner chat is known.
pub fn operator_chat(settings: &crate::config::Settings) -> ChatRef {
    crate::digest::owner_chats(settings)
        .into_iter()
        .next()
        .unwrap_or_else(|| ChatRef::new(Platform::Console, "console"))
}

/// The runtime's event service.
pub fn service(app: &crate::app::App, shutdown: CancellationToken) -> crate::runtime::Service {
    Box::pin(EventWorker::new(app.engine.clone()).service(shutdown))
}
