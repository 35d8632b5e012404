//! Durable runs. A run is a row; its history is the journal. To execute a
//! step the engine claims the run (a lease in the row), folds the journal
//! into the run's state, executes the step at the cursor and commits the
//! outcome (events, status, messages, approvals) in one transaction before
//! the next step starts. A run suspended for approval or input is woken by
//! the store in the same transaction that records the decision or message.
//! After a crash the lease lapses and any worker resumes the run from its
//! journal: a journaled step is never executed again.

mod guard;
mod replay;
mod state;
mod steps;

pub use replay::render_replay;
pub use state::{FoldError, RunState, StepConversation};

use std::sync::Arc;

use crate::agents::Agents;
use crate::config::Settings;
use crate::domain::{ButtonToken, ChatRef, RunId, RunInput, RunStatus};
use crate::flows::{FlowCatalog, Prompts};
use crate::store::{ClaimedRun, DecideError, Decided, NewRun, Store, StoreError};

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

/// Cheap to clone; all clones share one worker identity.
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

    /// Creates the run (or finds the one created under the same key).
    pub async fn start(&self, start: StartRun) -> Result<RunId, EngineError> {
        if self.inner.flows.get(&start.flow).is_none() {
            return Err(EngineError::UnknownFlow(start.flow));
        }
        let new = NewRun {
            flow: start.flow,
            chat: start.chat,
            input: RunInput {
                request: start.request,
                requested_by: start.requested_by,
            },
            idempotency_key: start.idempotency_key,
        };
        let (id, created) = self.inner.store.create_run(&new).await?;
        tracing::info!(run = %id, flow = %new.flow, created, "run started");
        Ok(id)
    }

    /// Executes the run's steps until it waits, finishes or fails. Returns
    /// the status it stopped in, or None when another worker holds it.
    #[tracing::instrument(skip(self))]
    pub async fn drive(&self, run_id: RunId) -> Result<Option<RunStatus>, EngineError> {
        let Some(claimed) = self.claim(run_id).await? else {
            return Ok(None);
        };
        let result = self.drive_claimed(&claimed).await;
        self.inner.store.release_run(&claimed).await?;
        result.map(Some)
    }

    /// Executes exactly one step of the run and keeps its lease, as a worker
    /// that crashed right after the commit would. For tests and tools.
    pub async fn try_execute_step(&self, run_id: RunId) -> Result<StepOutcome, EngineError> {
        let Some(claimed) = self.claim(run_id).await? else {
            return Ok(StepOutcome::NotClaimed);
        };
        self.execute_one(&claimed).await
    }

    /// Drives every runnable run nobody holds a live lease on: runs a crash
    /// interrupted, runs woken while no worker was looking. Returns them.
    pub async fn resume_runnable(&self) -> Result<Vec<RunId>, EngineError> {
        let mut resumed = Vec::new();
        while let Some(claimed) = self
            .inner
            .store
            .claim_next_runnable(&self.inner.worker, self.inner.lease_ms)
            .await?
        {
            tracing::info!(run = %claimed.run.id, "resuming run");
            resumed.push(claimed.run.id);
            match self.drive_claimed(&claimed).await {
                Ok(_) => self.inner.store.release_run(&claimed).await?,
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

    /// Records a button press; see [`Store::decide`].
    pub async fn decide(&self, token: &ButtonToken, by: &str) -> Result<Decided, DecideError> {
        self.inner.store.decide(token, by).await
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
            .claim_run(run_id, &self.inner.worker, self.inner.lease_ms)
            .await?)
    }

    async fn drive_claimed(&self, claimed: &ClaimedRun) -> Result<RunStatus, EngineError> {
        loop {
            match self.execute_one(claimed).await? {
                StepOutcome::Executed(RunStatus::Runnable) => continue,
                StepOutcome::Executed(status) => return Ok(status),
                StepOutcome::NotClaimed | StepOutcome::LeaseLost => {
                    return Ok(claimed.run.status);
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(run = %claimed.run.id))]
    async fn execute_one(&self, claimed: &ClaimedRun) -> Result<StepOutcome, EngineError> {
        let run = &claimed.run;
        let state = self.state(run.id).await?;
        if state.status != RunStatus::Runnable {
            return Ok(StepOutcome::Executed(state.status));
        }
        let flow = self
            .inner
            .flows
            .get(&state.flow)
            .ok_or_else(|| EngineError::UnknownFlow(state.flow.clone()))?;
        let cursor = state.cursor(flow);
        let mut transition = match flow.steps.get(cursor) {
            Some(step) => {
                tracing::debug!(step = %step.name, "executing step");
                self.execute_step(run, flow, step, &state).await
            }
            // Every step has an output but the run never closed (a crash
            // between the two is impossible, since both commit together, but
            // an edited flow file can shorten a flow).
            None => crate::store::Transition::new(RunStatus::Runnable),
        };
        let after = state.followed_by(&transition.events)?;
        steps::finish_if_done(&mut transition, &after, flow, run.id);
        let committed = self
            .inner
            .store
            .commit_transition(claimed, self.inner.lease_ms, &transition)
            .await?;
        if !committed {
            tracing::warn!("lease lost; another worker owns the run now");
            return Ok(StepOutcome::LeaseLost);
        }
        Ok(StepOutcome::Executed(transition.status))
    }
}
