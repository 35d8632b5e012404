//! What a run is made of: its status and the events of its journal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ApprovalId, ArtifactId, Decision, Tier};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Has a step to execute; a worker may claim it.
    Runnable,
    /// Suspended until an approver presses a button.
    WaitingApproval,
    /// Suspended until the operator sends a message (an edit, a reason).
    WaitingInput,
    /// Suspended until a queued batch call comes back.
    WaitingBatch,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Runnable => "runnable",
            RunStatus::WaitingApproval => "waiting_approval",
            RunStatus::WaitingInput => "waiting_input",
            RunStatus::WaitingBatch => "waiting_batch",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "runnable" => RunStatus::Runnable,
            "waiting_approval" => RunStatus::WaitingApproval,
            "waiting_input" => RunStatus::WaitingInput,
            "waiting_batch" => RunStatus::WaitingBatch,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            other => return Err(format!("unknown run status '{other}'")),
        })
    }
}

/// Why a run waits for the operator's next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputPurpose {
    /// The next message is the new version of the draft.
    EditedDraft,
    /// The next message says why the draft was rejected.
    RejectReason,
}

impl InputPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            InputPurpose::EditedDraft => "edited_draft",
            InputPurpose::RejectReason => "reject_reason",
        }
    }
}

impl FromStr for InputPurpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "edited_draft" => Ok(InputPurpose::EditedDraft),
            "reject_reason" => Ok(InputPurpose::RejectReason),
            other => Err(format!("unknown input purpose '{other}'")),
        }
    }
}

/// What started a run: the request text and who asked, where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInput {
    pub request: String,
    pub requested_by: String,
    /// The event that started the run (`{"id", "kind", "payload"}`), for
    /// a flow with `on = "..."`; see [`crate::events`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

/// One entry of a run's append-only journal. A run's state is the fold of
/// its events ([`crate::engine::RunState`]), so `soloist replay` can rebuild
/// any run from here alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JournalEvent {
    Started {
        flow: String,
        input: RunInput,
    },
    StepCompleted {
        step: String,
        output: serde_json::Value,
    },
    ApprovalRequested {
        step: String,
        approval_id: ApprovalId,
        draft: String,
    },
    Decided {
        step: String,
        approval_id: ApprovalId,
        decision: Decision,
        by: String,
    },
    InputRequested {
        step: String,
        purpose: InputPurpose,
    },
    InputReceived {
        step: String,
        purpose: InputPurpose,
        text: String,
        by: String,
    },
    ArtifactSaved {
        step: String,
        artifact_id: ArtifactId,
        status: String,
    },
    /// A non-urgent model call was queued for the next batch.
    BatchQueued {
        step: String,
        item_id: String,
    },
    /// The batch came back: the call's output, or why it failed.
    BatchFinished {
        step: String,
        item_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Failed {
        step: String,
        error: String,
    },
    Retried {
        by: String,
        /// The tier the failed step should use this time, if switched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<Tier>,
    },
    Completed {
        summary: String,
    },
    /// Where the run goes after `from` completed: the step named `to`, or
    /// `"end"`; journaled with the completion, so the cursor is folded from
    /// the journal, never recomputed from a flow file that may have changed.
    Routed {
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<String>,
        to: String,
    },
}

impl JournalEvent {
    /// The event's name, stored in its own column for queries.
    pub fn name(&self) -> &'static str {
        match self {
            JournalEvent::Started { .. } => "started",
            JournalEvent::StepCompleted { .. } => "step_completed",
            JournalEvent::ApprovalRequested { .. } => "approval_requested",
            JournalEvent::Decided { .. } => "decided",
            JournalEvent::InputRequested { .. } => "input_requested",
            JournalEvent::InputReceived { .. } => "input_received",
            JournalEvent::ArtifactSaved { .. } => "artifact_saved",
            JournalEvent::BatchQueued { .. } => "batch_queued",
            JournalEvent::BatchFinished { .. } => "batch_finished",
            JournalEvent::Failed { .. } => "failed",
            JournalEvent::Retried { .. } => "retried",
            JournalEvent::Completed { .. } => "completed",
            JournalEvent::Routed { .. } => "routed",
        }
    }
}
