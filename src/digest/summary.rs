//! The digest's optional one-paragraph summary (`digest.summary = true`,
//! off by default): the fast tier reads the digest's own text (numbers
//! computed in SQL, so nothing untrusted) and writes a short paragraph put
//! under its first line. Costed like any call (flow `digest`, step
//! `summary`); when the budget is short, or the model fails, the digest
//! goes out with its numbers alone and one line saying why.

use crate::agents::{Agents, ModelCall, ModelError};
use crate::config::Settings;
use crate::domain::{CostLabel, RunId, Tier};

const SYSTEM: &str = "You summarise a small business's daily operations digest for its owner in one short paragraph (at most four sentences): what needs their attention first, then anything unusual in cost or guardrails. Use only the figures given; never invent one.";

/// The digest's text with the summary paragraph under its title, or with
/// one line saying why there is none (the budget is short, the model
/// failed, no model is configured). `digest.summary` off: the text as is.
pub async fn summarize(
    agents: &Agents,
    settings: &Settings,
    text: &str,
    run_id: Option<RunId>,
    step: &str,
) -> String {
    if !settings.digest.summary {
        return text.to_string();
    }
    if !agents.is_configured() {
        return note(text, "no model is configured");
    }
    let call = ModelCall {
        tier: Tier::Fast,
        // low-cost: stopped, not downgraded, when the budget is short.
        label: CostLabel::LowCost,
        system: SYSTEM.to_string(),
        prompt: text.to_string(),
        max_tokens: 400,
        temperature: Some(0.2),
        run_id,
        flow: Some("digest".into()),
        step: Some(step.to_string()),
        reply_schema: None,
        redacted_items: 0,
    };
    match agents.complete(&call).await {
        Ok(completion) if !completion.text.trim().is_empty() => {
            with_paragraph(text, completion.text.trim())
        }
        Ok(_) => note(text, "the summary model answered nothing"),
        Err(ModelError::Blocked(_)) => note(text, "the budget is short today"),
        Err(error) => {
            tracing::warn!(error = ?error, "the digest summary failed; sending the numbers alone");
            note(text, "the summary model failed")
        }
    }
}

/// The paragraph under the digest's first line (its title).
fn with_paragraph(text: &str, paragraph: &str) -> String {
    match text.split_once('\n') {
        Some((title, rest)) => format!("{title}\n\n{paragraph}\n{rest}"),
        None => format!("{text}\n\n{paragraph}"),
    }
}

fn note(text: &str, reason: &str) -> String {
    format!("{text}\n(No summary today: {reason}.)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paragraph_goes_under_the_title() {
        assert_eq!(
            with_paragraph("Daily digest\n\nRuns: 3", "All calm."),
            "Daily digest\n\nAll calm.\n\nRuns: 3"
        );
    }
}
