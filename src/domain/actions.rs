//! What a non-approval button does. Stored beside its opaque token, never
//! in it, and usable once.

use serde::{Deserialize, Serialize};

use super::{Button, ButtonToken, RunId, Tier};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Raise one day's budget cap by `amount_usd`, once.
    RaiseDailyCap { day: String, amount_usd: f64 },
    /// Run a failed run again, optionally on another tier.
    RetryRun {
        run_id: RunId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<Tier>,
    },
    /// Give up on a failed run.
    CancelRun { run_id: RunId },
    /// Do what free text was routed to (a flow or a command), after the
    /// operator confirmed the guess.
    Route { intent: String, request: String },
    /// Pause (or resume) a schedule, from `/schedules`.
    SetSchedulePaused { name: String, paused: bool },
    /// FUNNEL: answer a publish step's "when?" ("now", "tomorrow 09:00",
    /// "monday 09:00", "pick").
    PublishWhen { run_id: RunId, when: String },
    /// FUNNEL: undo what the run published (the declared compensations).
    Retract { run_id: RunId },
    /// Change a reviewed variable of an offer, or confirm it (`/offer`).
    OfferTerms {
        offer_id: String,
        change: OfferChange,
    },
    /// AUTONOMY: the owner's answer to a graduation proposal made at
    /// `proposed_at` (unix ms): raise `flow` from `from` to `to` (Yes), or
    /// not yet.
    AnswerGraduation {
        flow: String,
        from: crate::autonomy::Level,
        to: crate::autonomy::Level,
        raise: bool,
        proposed_at: i64,
    },
}

/// What an offer's review button changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "set", rename_all = "snake_case")]
pub enum OfferChange {
    Discount {
        percent: u32,
    },
    /// `YYYY-MM-DD`.
    Start {
        date: String,
    },
    Confirm,
    Cancel,
}

/// Buttons for labelled actions, each with a fresh token, and the
/// (token, action) pairs the store keeps for them.
pub fn action_buttons(choices: Vec<(String, Action)>) -> (Vec<Button>, Vec<(ButtonToken, Action)>) {
    choices
        .into_iter()
        .map(|(label, action)| {
            let token = ButtonToken::generate();
            (
                Button {
                    label,
                    token: token.clone(),
                },
                (token, action),
            )
        })
        .unzip()
}
