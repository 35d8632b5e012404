//! A run's state, rebuilt by folding its journal. The engine decides every
//! step from this fold, never from memory, which is what makes a crash
//! harmless and `soloist replay` exact.

use std::collections::BTreeMap;

use crate::domain::{InputPurpose, JournalEvent, RunInput, RunStatus};
use crate::flows::Flow;

#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub flow: String,
    pub input: RunInput,
    pub status: RunStatus,
    pub waiting_for: Option<InputPurpose>,
    /// Each completed step's output, by step name.
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// For steps that talk with the operator (approvals): the latest event
    /// of the step, and the draft now under review.
    pub conversations: BTreeMap<String, StepConversation>,
    pub error: Option<String>,
    pub summary: Option<String>,
    /// The tier the operator switched a failed run to, for its model steps.
    pub tier_override: Option<crate::domain::Tier>,
    /// The step the journal last routed the run to (or `"end"`). None in a
    /// journal written before routes were journaled: then the cursor is the
    /// first step without an output, as it was.
    pub routed_to: Option<String>,
    /// How many times the journal routed the run into each step: a loop
    /// that never ends is stopped at [`MAX_VISITS`].
    pub visits: BTreeMap<String, usize>,
    pub events: usize,
}

/// How many times a run may enter one step: a loop whose exit never comes
/// (a model that always says "again", a cached answer) fails the run
/// instead of spending forever.
pub const MAX_VISITS: usize = 25;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepConversation {
    pub latest: Option<JournalEvent>,
    pub draft: Option<String>,
    pub approval_id: Option<crate::domain::ApprovalId>,
}

#[derive(Debug, thiserror::Error)]
#[error("the journal is not a valid run history: {0}")]
pub struct FoldError(pub String);

impl RunState {
    pub fn fold(events: &[JournalEvent]) -> Result<RunState, FoldError> {
        let Some(JournalEvent::Started { flow, input }) = events.first() else {
            return Err(FoldError("it does not begin with 'started'".into()));
        };
        let mut state = RunState {
            flow: flow.clone(),
            input: input.clone(),
            status: RunStatus::Runnable,
            waiting_for: None,
            outputs: BTreeMap::new(),
            conversations: BTreeMap::new(),
            error: None,
            summary: None,
            tier_override: None,
            routed_to: None,
            visits: BTreeMap::new(),
            events: 1,
        };
        for event in &events[1..] {
            state.apply(event)?;
        }
        Ok(state)
    }

    /// The state after `events` are appended.
    pub fn followed_by(&self, events: &[JournalEvent]) -> Result<RunState, FoldError> {
        let mut next = self.clone();
        for event in events {
            next.apply(event)?;
        }
        Ok(next)
    }

    fn apply(&mut self, event: &JournalEvent) -> Result<(), FoldError> {
        self.events += 1;
        match event {
            JournalEvent::Started { .. } => {
                return Err(FoldError("'started' appears twice".into()));
            }
            JournalEvent::StepCompleted { step, output } => {
                self.outputs.insert(step.clone(), output.clone());
            }
            JournalEvent::ApprovalRequested {
                step,
                approval_id,
                draft,
            } => {
                self.status = RunStatus::WaitingApproval;
                let conversation = self.conversations.entry(step.clone()).or_default();
                conversation.draft = Some(draft.clone());
                conversation.approval_id = Some(*approval_id);
                conversation.latest = Some(event.clone());
            }
            JournalEvent::InputRequested { step, purpose } => {
                self.status = RunStatus::WaitingInput;
                self.waiting_for = Some(*purpose);
                self.note(step, event);
            }
            JournalEvent::Decided { step, .. } | JournalEvent::InputReceived { step, .. } => {
                self.status = RunStatus::Runnable;
                self.waiting_for = None;
                self.note(step, event);
            }
            JournalEvent::ArtifactSaved { step, .. } => self.note(step, event),
            JournalEvent::BatchQueued { step, .. } => {
                self.status = RunStatus::WaitingBatch;
                self.note(step, event);
            }
            JournalEvent::BatchFinished { step, .. } => {
                self.status = RunStatus::Runnable;
                self.note(step, event);
            }
            JournalEvent::Failed { error, .. } => {
                self.status = RunStatus::Failed;
                self.error = Some(error.clone());
            }
            JournalEvent::Retried { tier, .. } => {
                self.status = RunStatus::Runnable;
                self.error = None;
                // A failed batch call is queued afresh on retry.
                self.conversations.retain(|_, c| {
                    !matches!(
                        c.latest,
                        Some(JournalEvent::BatchFinished { error: Some(_), .. })
                    )
                });
                if tier.is_some() {
                    self.tier_override = *tier;
                }
            }
            JournalEvent::Completed { summary } => {
                self.status = RunStatus::Completed;
                self.summary = Some(summary.clone());
            }
            JournalEvent::Routed { to, .. } => {
                // A step entered again starts afresh: an approval asks
                // again, a batched call is queued again. Its old output
                // stays until the new one replaces it (a rewrite can read
                // the version it replaces).
                self.conversations.remove(to);
                *self.visits.entry(to.clone()).or_default() += 1;
                self.routed_to = Some(to.clone());
            }
        }
        Ok(())
    }

    fn note(&mut self, step: &str, event: &JournalEvent) {
        self.conversations
            .entry(step.to_string())
            .or_default()
            .latest = Some(event.clone());
    }

    /// The index of the step to execute next: the one the journal last
    /// routed the run to. Equal to the number of steps when the route says
    /// `"end"` (or names a step the flow file no longer has). A journal
    /// without routes (written before branching) keeps its old rule: the
    /// first step without an output.
    pub fn cursor(&self, flow: &Flow) -> usize {
        match self.routed_to.as_deref() {
            Some(crate::flows::END) => flow.steps.len(),
            Some(step) => flow.step_index(step).unwrap_or(flow.steps.len()),
            None => flow
                .steps
                .iter()
                .position(|step| !self.outputs.contains_key(&step.name))
                .unwrap_or(flow.steps.len()),
        }
    }

    pub fn conversation(&self, step: &str) -> StepConversation {
        self.conversations.get(step).cloned().unwrap_or_default()
    }
}
