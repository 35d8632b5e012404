//! The digest's optional one-paragraph summary (`digest.summary = true`,
//! off by default): the fast tier reads the digest's own text (numbers
//! computed in SQL, so nothing untrusted) and writes a short paragraph put
//! under its first line. Costed like any call (flow `digest`, step
//! `summary`); when the budget is short, or the model fails, the digest
//! goes out with its numbers alone and one line saying why.

use crate::agents::{Agents, ModelCall, ModelError};
use crate::config::Settings;
use crate::domain::{CostLabel, Tier};

use super::Digest;

const SYSTEM: &str = "You summarise a small business's daily operations digest for its owner in one short paragraph (at most four sentences): what needs their attention first, then anything unusual in cost or guardrails. Use only the figures given; never invent one.";

/// Adds the summary paragraph to `digest` when `digest.summary` is on.
pub async fn summarize(agents: &Agents, settings: &Settings, digest: &mut Digest) {
    if !settings.digest.summary {
        return;
    }
    let call = ModelCall {
        tier: Tier::Fast,
        // low-cost: stopped, not downgraded, when the budget is short.
        label: CostLabel::LowCost,
        system: SYSTEM.to_string(),
        prompt: digest.text.clone(),
        max_tokens: 400,
        temperature: Some(0.2),
        run_id: None,
        flow: Some("digest".into()),
        step: Some("summary".into()),
        reply_schema: None,
        redacted_items: 0,
    };
    match agents.complete(&call).await {
        Ok(completion) if !completion.text.trim().is_empty() => {
            digest.text = with_paragraph(&digest.text, completion.text.trim());
        }
        Ok(_) => note(digest, "the summary model answered nothing"),
        Err(ModelError::Blocked(_)) => note(digest, "the budget is short today"),
        Err(error) => {
            tracing::warn!(error = ?error, "the digest summary failed; sending the numbers alone");
            note(digest, "the summary model failed");
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

fn note(digest: &mut Digest, reason: &str) {
    digest.text = format!("{}\n(No summary today: {reason}.)", digest.text);
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
