//! What can go wrong with a model call, and what the operator can do about
//! it, in one sentence each.

use super::providers::CallError;
use crate::domain::Tier;
use crate::store::{BudgetRefusal, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model provider is configured")]
    NotConfigured,
    #[error(
        "not run: it could cost up to ${:.4}, and {} budget has ${:.4} left (today ${:.2} of ${:.2} used, this month ${:.2} of ${:.2}). Nothing was spent",
        .0.needed_usd, .0.which, if .0.which == "today's" { .0.day.left_usd() } else { .0.month.left_usd() },
        .0.day.spent_usd + .0.day.reserved_usd, .0.day.cap_usd, .0.month.spent_usd + .0.month.reserved_usd, .0.month.cap_usd
    )]
    Blocked(BudgetRefusal),
    #[error("every model of the {tier} tier failed; the last, {model}, {error}")]
    Exhausted {
        tier: Tier,
        model: String,
        error: CallError,
    },
    #[error("the cost ledger could not be written")]
    Ledger(#[source] StoreError),
}

impl ModelError {
    /// What the operator can do about it, in one sentence.
    pub fn advice(&self) -> &'static str {
        match self {
            ModelError::NotConfigured => HOW_TO_CONFIGURE,
            ModelError::Blocked(_) => "Raise today's cap once, retry later, or cancel.",
            ModelError::Exhausted { error, .. } => match error {
                CallError::Timeout(_) => {
                    "The provider may be overloaded; retry in a minute, or switch to the fast tier."
                }
                CallError::Status { status: 429, .. } => {
                    "The provider is rate limiting you; retry in a minute."
                }
                CallError::Status { status, .. } if *status >= 500 => {
                    "The provider is having trouble; retry later or switch tier."
                }
                CallError::Status { .. } => {
                    "Check the model names and provider settings (soloist doctor helps)."
                }
                CallError::Unauthorized => "Check the provider's API key (soloist doctor helps).",
                CallError::Unreachable(_) => {
                    "Check OPENAI_BASE_URL and that the provider is running (soloist doctor helps)."
                }
                CallError::Malformed(_) | CallError::Empty => {
                    "Retry; if it keeps happening, the endpoint may not be OpenAI-compatible."
                }
            },
            ModelError::Ledger(_) => "Check the database (soloist doctor helps).",
        }
    }
}

/// The one sentence a flow that needs a model answers with when none is set.
pub const HOW_TO_CONFIGURE: &str = "No model is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for Ollama, OpenRouter or vLLM, e.g. http://localhost:11434/v1) or ANTHROPIC_API_KEY, then start soloist again.";
