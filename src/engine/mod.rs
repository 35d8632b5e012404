//! Durable runs. A run is a row; its history is the journal. To execute a
//! step the engine claims the run (a lease under a token unique to the
//! claim), folds the journal into the run's state, executes the step at the
//! cursor and commits the outcome (events, status, messages, approvals) in
//! one transaction fenced by that token. A heartbeat renews the lease while
//! a step runs, so a slow model call keeps its run and a dead worker's run
//! is taken over within one short lease. Every other transition (decide,
//! input, retry, cancel) is in [`transitions`]. After a crash the lease
//! lapses and any worker resumes the run from its journal: a journaled step
//! is never executed again.

mod digest_steps;
mod generate_step;
mod guard;
mod lead_steps;
mod replay;
mod state;
mod steps;
mod transitions;

pub use replay::render_replay;
pub use state::{FoldError, MAX_VISITS, RunState, StepConversation};
pub(crate) use steps::{completed, failed};
use transitions::Committed;
pub use transitions::{Actor, DecideError, Transition};

use std::sync::Arc;
use std::time::Duration;

use crate::agents::Agents;
use crate::config::Settings;
use crate::domain::{ChatRef, JournalEvent, RunId, RunInput, RunStatus};
use crate::flows::{FlowCatalog, Prompts, StepDef, StepKind};
use crate::store::{ClaimedRun, NewRun, Store, StoreError, Tx};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("there is no flow named '{0}'")]
    UnknownFlow(String),
    #[error("run {0} does not exist")]
    UnknownRun(RunId),
    #[error(transparent)]
    Fold(#[from] FoldError),
}

/// What a request to start a run carries.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub flow: String,
    pub chat: ChatRef,
    pub request: String,
    pub requested_by: String,
    /// Repeating a start with the same key returns the same run.
    pub idempotency_key: String,
}

/// The outcome of one [`Engine::try_execute_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// A step ran and was committed; the run is now in this status.
    Executed(RunStatus),
    /// Nothing to do: not runnable, or another worker holds its lease.
    NotClaimed,
    /// The lease lapsed mid-step and another worker took over; nothing of
    /// this execution was committed.
    LeaseLost,
}

/// Cheap to clone. Clones share a worker name (for the log), but every
/// claim takes its own lease token: no two claims of one run overlap.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    flows: FlowCatalog,
    prompts: Prompts,
    agents: Agents,
    settings: Arc<Settings>,
    guard: Arc<crate::policy::Guard>,
    worker: String,
    lease_ms: i64,
    heartbeat: Duration,
    /// Each run's origin, which never changes once the run is created
    /// (it commits with the run): read once, not by every step.
    origins: moka::future::Cache<RunId, crate::policy::Origin>,
}

/// What an engine is built from.
#[derive(Debug)]
pub struct EngineParts {
    pub store: Store,
    pub flows: FlowCatalog,
    pub prompts: Prompts,
    pub agents: Agents,
    pub settings: Arc<Settings>,
    /// POLICY HOOK: the guardrails every step goes through.
    pub guard: Arc<crate::policy::Guard>,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Engine {
        let lease_ms = (parts.settings.engine.lease_secs * 1000.0).round().max(1.0) as i64;
        let heartbeat =
            Duration::from_secs_f64(parts.settings.engine.heartbeat_secs.clamp(0.01, 3600.0));
        Engine {
            inner: Arc::new(Inner {
                store: parts.store,
                flows: parts.flows,
                prompts: parts.prompts,
                agents: parts.agents,
                settings: parts.settings,
                guard: parts.guard,
                worker: format!("worker-{}", uuid::Uuid::new_v4().simple()),
                lease_ms,
                heartbeat,
                origins: moka::future::Cache::new(10_000),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn flows(&self) -> &FlowCatalog {
        &self.inner.flows
    }

    pub fn prompts(&self) -> &Prompts {
        &self.inner.prompts
    }

    pub fn agents(&self) -> &Agents {
        &self.inner.agents
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn guard(&self) -> &crate::policy::Guard {
        &self.inner.guard
    }

    /// The shared settings, for a part that keeps its own handle.
    pub fn settings_handle(&self) -> Arc<Settings> {
        self.inner.settings.clone()
    }

    /// Creates the run (or finds the one created under the same key).
    pub async fn start(&self, start: StartRun) -> Result<RunId, EngineError> {
        let new = self.new_run(start)?;
        let (id, created) = self.inner.store.create_run(&new).await?;
        tracing::info!(run = %id, flow = %new.flow, created, "run started");
        Ok(id)
    }

    /// [`Engine::start`] inside a caller's transaction.
    pub async fn start_in(&self, tx: &mut Tx, start: StartRun) -> Result<RunId, EngineError> {
        Ok(self.create_in(tx, start).await?.0)
    }

    /// Creates the run in `tx` (or finds the one under the same key); true
    /// when it is new.
    async fn create_in(&self, tx: &mut Tx, start: StartRun) -> Result<(RunId, bool), EngineError> {
        let new = self.new_run(start)?;
        let (id, created) = tx.create_run(&new).await?;
        tracing::info!(run = %id, flow = %new.flow, created, "run started");
        Ok((id, created))
    }

    /// Starts a run for an event inside the event worker's transaction:
    /// the run's input carries the event, and its text (the payload) is
    /// quoted as untrusted data in every prompt.
    pub async fn start_event_in(
        &self,
        tx: &mut Tx,
        start: StartRun,
        event: &crate::store::events::EventRow,
    ) -> Result<RunId, EngineError> {
        let mut new = self.new_run(start)?;
        new.input.event = Some(serde_json::json!({
            "id": event.id,
            "kind": event.kind,
            "payload": event.payload,
        }));
        let (id, created) = tx.create_run(&new).await?;
        if created {
            let origin = crate::policy::Origin::Forwarded;
            tx.record_guardrail(id, "origin", origin.as_str()).await?;
        }
        Ok(id)
    }

    fn new_run(&self, start: StartRun) -> Result<NewRun, EngineError> {
        if self.inner.flows.get(&start.flow).is_none() {
            return Err(EngineError::UnknownFlow(start.flow));
        }
        Ok(NewRun {
            flow: start.flow,
            chat: start.chat,
            input: RunInput {
                request: start.request,
                requested_by: start.requested_by,
                event: None,
            },
            idempotency_key: start.idempotency_key,
        })
    }

    /// Executes the run's steps until it waits, finishes or fails. Returns
    /// the status it stopped in, or None when another worker holds it.
    #[tracing::instrument(skip(self))]
    pub async fn drive(&self, run_id: RunId) -> Result<Option<RunStatus>, EngineError> {
        let Some(claimed) = self.claim(run_id).await? else {
            return Ok(None);
        };
        let beat = self.heartbeat(&claimed);
        let result = self.drive_claimed(&claimed).await;
        drop(beat);
        let (status, released) = result?;
        if !released {
            self.inner.store.release_run(&claimed).await?;
        }
        Ok(Some(status))
    }

    /// Executes exactly one step of the run and keeps its lease, as a worker
    /// that crashed right after the commit would. For tests and tools.
    pub async fn try_execute_step(&self, run_id: RunId) -> Result<StepOutcome, EngineError> {
        let Some(claimed) = self.claim(run_id).await? else {
            return Ok(StepOutcome::NotClaimed);
        };
        let _beat = self.heartbeat(&claimed);
        Ok(self.execute_one(&claimed, None, None, false).await?.outcome)
    }

    /// Drives every runnable run nobody holds a live lease on: runs a crash
    /// interrupted, runs woken while no worker was looking. Returns them.
    pub async fn resume_runnable(&self) -> Result<Vec<RunId>, EngineError> {
        let mut resumed = Vec::new();
        while let Some(claimed) = self
            .inner
            .store
            .claim_next_runnable(&self.lease_token(), self.inner.lease_ms)
            .await?
        {
            tracing::info!(run = %claimed.run.id, "resuming run");
            resumed.push(claimed.run.id);
            let beat = self.heartbeat(&claimed);
            let driven = self.drive_claimed(&claimed).await;
            drop(beat);
            match driven {
                Ok((_, true)) => {}
                Ok((_, false)) => self.inner.store.release_run(&claimed).await?,
                // One broken run must not hold up the others: it keeps its
                // lease (so this loop does not claim it again at once) and
                // is tried again when the lease lapses.
                Err(error) => {
                    tracing::error!(run = %claimed.run.id, error = ?error, "resuming a run failed")
                }
            }
        }
        Ok(resumed)
    }

    /// The run's state, folded from its journal.
    pub async fn state(&self, run_id: RunId) -> Result<RunState, EngineError> {
        let events = self.inner.store.journal(run_id).await?;
        if events.is_empty() {
            return Err(EngineError::UnknownRun(run_id));
        }
        Ok(RunState::fold(&events)?)
    }

    async fn claim(&self, run_id: RunId) -> Result<Option<ClaimedRun>, EngineError> {
        Ok(self
            .inner
            .store
            .claim_run(run_id, &self.lease_token(), self.inner.lease_ms)
            .await?)
    }

    /// A token for one claim: the worker's name (for the log) and a part
    /// no other claim shares.
    fn lease_token(&self) -> String {
        format!("{}:{}", self.inner.worker, uuid::Uuid::new_v4().simple())
    }

    /// Renews the claim's lease every heartbeat until dropped. When a
    /// renewal finds the claim superseded it stops; the step's commit will
    /// then be refused.
    fn heartbeat(&self, claimed: &ClaimedRun) -> Heartbeat {
        let store = self.inner.store.clone();
        let claimed = claimed.clone();
        let lease_ms = self.inner.lease_ms;
        let every = self.inner.heartbeat;
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.renew_lease(&claimed, lease_ms).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(run = %claimed.run.id, "lease lost; the step's commit will be refused");
                        return;
                    }
                    // The next beat tries again; the lease is still live
                    // while beats are at most a third of it.
                    Err(error) => {
                        tracing::warn!(run = %claimed.run.id, error = ?error, "renewing a lease failed")
                    }
                }
            }
        }))
    }

    /// Executes the run's steps under one claim until it stops. Returns the
    /// status it stopped in, and whether the last commit released the
    /// claim's lease with it (else the caller releases it).
    async fn drive_claimed(&self, claimed: &ClaimedRun) -> Result<(RunStatus, bool), EngineError> {
        // The journal as the last step left it, when its commit showed that
        // nothing else was appended: the next step need not read it again.
        let mut known = None;
        // Steps executed but not yet committed (see `Executed::deferred`).
        let mut deferred = None;
        loop {
            let executed = self
                .execute_one(claimed, known.take(), deferred.take(), true)
                .await?;
            known = executed.journal;
            deferred = executed.deferred;
            match executed.outcome {
                StepOutcome::Executed(RunStatus::Runnable) => continue,
                StepOutcome::Executed(status) => return Ok((status, executed.released)),
                StepOutcome::NotClaimed | StepOutcome::LeaseLost => {
                    return Ok((claimed.run.status, false));
                }
            }
        }
    }

    /// Executes the step at the run's cursor and commits it. `known` is the
    /// run's journal when the caller has it whole (read it otherwise); the
    /// journal after the commit comes back when it is known whole too.
    /// `deferred` holds earlier steps of this claim not committed yet: they
    /// commit with this one. With `may_defer`, a step that only gathers
    /// (context, retrieval) is not committed on its own but handed back to
    /// go with the next step's commit.
    #[tracing::instrument(skip_all, fields(run = %claimed.run.id))]
    async fn execute_one(
        &self,
        claimed: &ClaimedRun,
        known: Option<Vec<JournalEvent>>,
        deferred: Option<Transition>,
        may_defer: bool,
    ) -> Result<Executed, EngineError> {
        let run = &claimed.run;
        let mut journal = match known {
            Some(journal) => journal,
            None => self.inner.store.journal(run.id).await?,
        };
        if journal.is_empty() {
            return Err(EngineError::UnknownRun(run.id));
        }
        let mut state = RunState::fold(&journal)?;
        if let Some(deferred) = &deferred {
            state = state.followed_by(&deferred.events)?;
        }
        if state.status != RunStatus::Runnable {
            return Ok(Executed::without_commit(StepOutcome::Executed(
                state.status,
            )));
        }
        let flow = self
            .inner
            .flows
            .get(&state.flow)
            .ok_or_else(|| EngineError::UnknownFlow(state.flow.clone()))?;
        let cursor = state.cursor(flow);
        let step = flow.steps.get(cursor);
        let mut transition = match step {
            Some(step) => {
                tracing::debug!(step = %step.name, "executing step");
                self.execute_step(run, flow, step, &state).await
            }
            // Every step has an output but the run never closed (a crash
            // between the two is impossible, since both commit together, but
            // an edited flow file can shorten a flow).
            None => Transition::new(RunStatus::Runnable),
        };
        steps::route_after(&mut transition, &claimed.run, &state, flow, cursor);
        if transition.status == RunStatus::Failed {
            self.announce_failure(&mut transition, &claimed.run, &state);
        }
        let after = state.followed_by(&transition.events)?;
        steps::finish_if_done(&mut transition, &after, flow, run.id);
        let transition = match deferred {
            Some(deferred) => deferred.followed_by(transition),
            None => transition,
        };
        if may_defer && step.is_some_and(only_gathers) && transition.only_journals() {
            return Ok(Executed {
                outcome: StepOutcome::Executed(RunStatus::Runnable),
                journal: Some(journal),
                deferred: Some(transition),
                released: false,
            });
        }
        let committed = self
            .commit_with_retries(claimed, &transition, journal.len())
            .await?;
        let journal_was_seen = match committed {
            Committed::Refused => {
                tracing::warn!("lease lost; another worker owns the run now");
                return Ok(Executed::without_commit(StepOutcome::LeaseLost));
            }
            Committed::Landed { journal_was_seen } => journal_was_seen,
        };
        // FUNNEL: a post for "now" goes out at once, not at the next tick.
        crate::funnel::publish_at_once(self, &transition).await;
        let after = journal_was_seen.then(|| {
            journal.extend(transition.events.iter().cloned());
            journal
        });
        Ok(Executed {
            outcome: StepOutcome::Executed(transition.status),
            journal: after,
            deferred: None,
            // The commit that leaves the run anything but runnable also
            // clears its lease (`Tx::fence`).
            released: transition.status != RunStatus::Runnable,
        })
    }
}

/// What [`Engine::execute_one`] did.
struct Executed {
    outcome: StepOutcome,
    /// The run's journal after the step, when known whole.
    journal: Option<Vec<JournalEvent>>,
    /// Steps executed and not yet committed, to commit with the next.
    deferred: Option<Transition>,
    /// The commit cleared the claim's lease.
    released: bool,
}

impl Executed {
    fn without_commit(outcome: StepOutcome) -> Self {
        Executed {
            outcome,
            journal: None,
            deferred: None,
            released: false,
        }
    }
}

/// A step that only gathers what later steps use (the context, the
/// retrieval): it pays nothing and tells no one, so doing it again after a
/// crash costs a few reads. Its commit can wait for the next step's: under
/// a burst that is one transaction (on SQLite one writer's turn and one
/// sync to disk) less per step.
fn only_gathers(step: &StepDef) -> bool {
    matches!(step.kind, StepKind::Context | StepKind::Retrieve { .. })
}

/// The waits before each new try of a step's commit that failed. The step
/// is done and may have been paid for (a model call): dropping it on a
/// passing database error would leave the run to be taken over after its
/// lease and the step executed, and paid, a second time.
const COMMIT_RETRY: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

impl Engine {
    /// [`Engine::commit_step`], tried again while the claim's heartbeat
    /// keeps the lease. `seen` is the journal's length the step started
    /// from: a commit whose answer was lost but which landed has made the
    /// journal longer, and is not written twice.
    async fn commit_with_retries(
        &self,
        claimed: &ClaimedRun,
        transition: &Transition,
        seen: usize,
    ) -> Result<Committed, EngineError> {
        let mut waits = COMMIT_RETRY.iter();
        loop {
            let error = match self.commit_step(claimed, transition, seen).await {
                Ok(committed) => return Ok(committed),
                Err(error) => error,
            };
            let Some(wait) = waits.next() else {
                return Err(error.into());
            };
            tracing::warn!(error = ?error, ?wait, "committing a step failed; trying again");
            tokio::time::sleep(*wait).await;
            match self.inner.store.journal(claimed.run.id).await {
                // Landed, though its answer was lost: the journal is read
                // again by the next step.
                Ok(journal) if journal.len() > seen => {
                    return Ok(Committed::Landed {
                        journal_was_seen: false,
                    });
                }
                _ => {}
            }
        }
    }
}

impl Engine {
    /// A run that failed emits `run.failed` (keyed on the run and the
    /// journal's length, so a retried run that fails again is a new event)
    /// and, unless `events.notify_run_failed` is off, tells the owner's
    /// chats ([`crate::digest::owner_chats`]) other than the run's own,
    /// which the failed step already told.
    fn announce_failure(
        &self,
        transition: &mut Transition,
        run: &crate::store::RunRow,
        state: &RunState,
    ) {
        let (step, error) = transition
            .events
            .iter()
            .find_map(|e| match e {
                JournalEvent::Failed { step, error } => Some((step.clone(), error.clone())),
                _ => None,
            })
            .unwrap_or_default();
        let payload = serde_json::json!({
            "run_id": run.id,
            "flow": run.flow,
            "step": step,
            "error": error,
        });
        let key = format!("run.failed:{}:{}", run.id, state.events);
        transition.emits.push(("run.failed".into(), payload, key));
        if !self.inner.settings.events.notify_run_failed {
            return;
        }
        let short = run.id.short();
        let text = format!(
            "Run {short} ({}) failed at step '{step}': {error}. /run {short} shows it; /retry {short} tries again.",
            run.flow
        );
        for chat in crate::digest::owner_chats(&self.inner.settings) {
            if chat != run.chat {
                transition
                    .notices
                    .push((chat, crate::domain::Outbound::text(text.clone())));
            }
        }
    }
}

/// A running heartbeat; dropping it stops the renewals.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
