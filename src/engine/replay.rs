//! `soloist replay RUN_ID`: a run rebuilt from its journal alone, event by
//! event, and checked against the run's row.

use std::fmt::Write;

use super::state::RunState;
use crate::domain::JournalEvent;
use crate::store::RunRow;

/// The journal as a numbered timeline, the state it folds into, and whether
/// that state agrees with the run's row.
pub fn render_replay(run: &RunRow, events: &[JournalEvent]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "run {} (flow {})", run.id, run.flow);
    for (index, event) in events.iter().enumerate() {
        let _ = writeln!(out, "  {:>3}. {}", index + 1, describe(event));
    }
    match RunState::fold(events) {
        Ok(state) => {
            let _ = writeln!(out, "rebuilt state: {}", state.status);
            if let Some(summary) = &state.summary {
                let _ = writeln!(out, "  summary: {summary}");
            }
            if let Some(error) = &state.error {
                let _ = writeln!(out, "  error: {error}");
            }
            let _ = writeln!(
                out,
                "  completed steps: {}",
                state.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            if state.status == run.status {
                let _ = writeln!(out, "journal and run row agree.");
            } else {
                let _ = writeln!(
                    out,
                    "MISMATCH: the run row says {}, the journal says {}.",
                    run.status, state.status
                );
            }
        }
        Err(error) => {
            let _ = writeln!(out, "cannot rebuild: {error}");
        }
    }
    out
}

fn describe(event: &JournalEvent) -> String {
    match event {
        JournalEvent::Started { flow, input } => {
            format!(
                "started flow '{flow}' for {}: {}",
                input.requested_by,
                clip(&input.request)
            )
        }
        JournalEvent::StepCompleted { step, output } => {
            format!("step '{step}' completed: {}", clip(&output.to_string()))
        }
        JournalEvent::ApprovalRequested {
            step,
            approval_id,
            draft,
        } => {
            format!(
                "step '{step}' asked for approval {}: {}",
                approval_id.short(),
                clip(draft)
            )
        }
        JournalEvent::Decided {
            step, decision, by, ..
        } => {
            format!("step '{step}': {by} chose {}", decision.as_str())
        }
        JournalEvent::InputRequested { step, purpose } => {
            format!("step '{step}' asked for input ({})", purpose.as_str())
        }
        JournalEvent::InputReceived {
            step,
            purpose,
            text,
            by,
        } => {
            format!(
                "step '{step}' received {} from {by}: {}",
                purpose.as_str(),
                clip(text)
            )
        }
        JournalEvent::ArtifactSaved {
            step,
            artifact_id,
            status,
        } => {
            format!(
                "step '{step}' saved artifact {} as {status}",
                artifact_id.short()
            )
        }
        JournalEvent::BatchQueued { step, item_id } => {
            format!("step '{step}' queued batch call {}", clip(item_id))
        }
        JournalEvent::BatchFinished {
            step, error: None, ..
        } => {
            format!("step '{step}': batch call came back")
        }
        JournalEvent::BatchFinished {
            step,
            error: Some(error),
            ..
        } => {
            format!("step '{step}': batch call failed: {error}")
        }
        JournalEvent::Failed { step, error } => format!("step '{step}' failed: {error}"),
        JournalEvent::Retried { by, tier: None } => format!("retried by {by}"),
        JournalEvent::Retried {
            by,
            tier: Some(tier),
        } => format!("retried by {by} on the {tier} tier"),
        JournalEvent::Completed { summary } => format!("completed: {summary}"),
        JournalEvent::Routed {
            from,
            outcome: Some(outcome),
            to,
        } => format!("step '{from}' ended '{outcome}': next '{to}'"),
        JournalEvent::Routed {
            from,
            outcome: None,
            to,
        } => format!("step '{from}': next '{to}'"),
    }
}

fn clip(text: &str) -> String {
    crate::domain::clip(text, 100)
}
