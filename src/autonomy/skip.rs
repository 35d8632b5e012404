//! The approve step's question to autonomy: may this offer be approved
//! without the operator? The engine asks after the guardrails have put
//! their flags on the offer (`engine::steps`, the Approve branch).

use std::fmt::Write;

use super::{Level, level_of};
use crate::config::Settings;
use crate::domain::JournalEvent;
use crate::engine::{RunState, Transition};
use crate::store::Store;

/// Guardrail audit kinds on an offer that bring its approval back: a flag
/// on the draft, or a check that was configured and could not run (the
/// fast-tier review, the injection classifier).
const BRING_BACK: [&str; 3] = ["flagged", "review_skipped", "classifier_skipped"];

/// What autonomy decided about one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The offer waits for the operator (its message may say why autonomy
    /// did not apply).
    Wait,
    /// Approved by autonomy: journaled with `by` as the decider; the
    /// operator is told with `notice`, followed by the draft.
    Approve { by: String, notice: String },
}

/// Who a skipped approval is journaled as decided by.
pub fn decider(level: Level) -> String {
    format!("autonomy ({level})")
}

/// Decides the offer `transition` makes at step `step` of a run of `flow`.
/// Only a first offer is ever skipped: once a person has answered this
/// approval (an edit offered again, Back), it stays theirs.
pub async fn verdict(
    store: &Store,
    settings: &Settings,
    flow: &str,
    state: &RunState,
    step: &str,
    transition: &mut Transition,
) -> Verdict {
    if transition.approval.is_none() || state.conversation(step).latest.is_some() {
        return Verdict::Wait;
    }
    let level = match level_of(store, settings, flow).await {
        Ok(found) => found.level,
        Err(error) => {
            // Unknown level: the safe reading is that a person decides.
            tracing::warn!(error = ?error, %flow, "autonomy level unreadable; the approval waits");
            return Verdict::Wait;
        }
    };
    if level == Level::Always {
        return Verdict::Wait;
    }
    let flagged = transition
        .guardrails
        .iter()
        .any(|(kind, _)| BRING_BACK.contains(&kind.as_str()));
    if flagged {
        note_on_offer(
            transition,
            format!(
                "Autonomy did not apply ({flow} runs at '{level}'): the guardrails flagged this draft, so it waits for you."
            ),
        );
        return Verdict::Wait;
    }
    let uncertain = uncertain_step(state);
    if level == Level::Borderline
        && let Some(marked_by) = uncertain
    {
        note_on_offer(
            transition,
            format!(
                "Waiting for you: {flow} runs at 'borderline' and step '{marked_by}' marked this case uncertain."
            ),
        );
        return Verdict::Wait;
    }
    let why = match level {
        Level::Borderline => " and nothing marked this case uncertain",
        _ => "",
    };
    Verdict::Approve {
        by: decider(level),
        notice: format!(
            "Approved by autonomy: {flow} runs at '{level}'{why}, so this did not wait for you. What goes out:"
        ),
    }
}

/// The first earlier step whose output says `"uncertain": true`.
fn uncertain_step(state: &RunState) -> Option<&str> {
    state
        .outputs
        .iter()
        .find(|(_, output)| output.get("uncertain").and_then(|u| u.as_bool()) == Some(true))
        .map(|(step, _)| step.as_str())
}

/// A line above everything else on the offer's message.
fn note_on_offer(transition: &mut Transition, line: String) {
    if let Some(approval) = transition.approval.as_mut() {
        approval.message.text = format!("{line}\n{}", approval.message.text);
    }
}

/// `/run`'s lines for the run's decisions: each step's decision and who
/// made it (a person, or autonomy at its level). Empty with none.
pub fn decision_lines(events: &[JournalEvent]) -> String {
    let mut text = String::new();
    for event in events {
        if let JournalEvent::Decided {
            step, decision, by, ..
        } = event
        {
            let _ = write!(
                text,
                "\nDecision at '{step}': {} by {by}",
                decision.as_str()
            );
        }
    }
    text
}
