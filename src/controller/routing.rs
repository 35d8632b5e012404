//! Free text to intent: the `router` tier (a small model) picks a flow or a
//! built-in command, with a confidence; below the threshold the bot asks.
//! Guesses are cached on the normalised text, so a repeated request costs
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use serde::Deserialize;
use serde_json::json;

use crate::agents::{ModelCall, ModelError};
use crate::domain::{CostLabel, Tier};
use crate::engine::Engine;

/// The built-in commands free text may mean, with the words the router
/// reads.
pub const COMMAND_INTENTS: [(&str, &str); 4] = [
    ("runs", "list recent runs (workflows) and their status"),
    (
        "approvals",
        "show the drafts waiting for the operator's decision",
    ),
    (
        "cost",
        "report what the models cost today and this month against the budget",
    ),
    ("help", "explain what the assistant can do and its commands"),
];

/// What the router made of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    /// A flow name, a command intent, or "none".
    pub intent: String,
    pub confidence: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the route prompt could not be rendered: {0}")]
    Prompt(String),
}

#[derive(Clone)]
pub struct IntentRouter {
    guesses: Cache<String, Arc<Guess>>,
}

impl std::fmt::Debug for IntentRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntentRouter").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawGuess {
    intent: String,
    #[serde(default)]
    confidence: f64,
}

impl IntentRouter {
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        IntentRouter {
            guesses: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
        }
    }

    /// Classifies `text` (from the cache when the same words came before).
    pub async fn classify(&self, engine: &Engine, text: &str) -> Result<Guess, RouteError> {
        let key = normalise(text);
        if let Some(guess) = self.guesses.get(&key).await {
            return Ok((*guess).clone());
        }
        let guess = self.ask_router(engine, text).await?;
        self.guesses.insert(key, Arc::new(guess.clone())).await;
        Ok(guess)
    }

    async fn ask_router(&self, engine: &Engine, text: &str) -> Result<Guess, RouteError> {
        let options = intent_options(engine);
        let values = json!({
            "business": engine.settings().business,
            "options": options.iter().map(|(name, description)| json!({"name": name, "description": description})).collect::<Vec<_>>(),
            "message": text,
        });
        let prompt = engine
            .prompts()
            .render("route", &values)
            .map_err(|e| RouteError::Prompt(e.to_string()))?;
        let call = ModelCall {
            tier: Tier::Router,
            label: CostLabel::Balanced,
            system: "You classify requests. Answer with JSON only.".into(),
            prompt,
            max_tokens: 60,
            temperature: Some(0.0),
            run_id: None,
            flow: None,
            step: Some("route".into()),
            redacted_items: 0,
        };
        let completion = engine.agents().complete(&call).await?;
        Ok(parse_guess(&completion.text, &options))
    }
}

/// Flows first, then the built-in commands.
pub fn intent_options(engine: &Engine) -> Vec<(String, String)> {
    let flows = engine.flows();
    flows
        .names()
        .filter_map(|name| flows.get(name))
        .map(|flow| (flow.name.clone(), flow.description.clone()))
        .chain(
            COMMAND_INTENTS
                .iter()
                .map(|(n, d)| (n.to_string(), d.to_string())),
        )
        .collect()
}

/// Reads the router's JSON (tolerating text around it); anything unreadable
/// or naming no known option is a guess of "none" with no confidence.
fn parse_guess(reply: &str, options: &[(String, String)]) -> Guess {
    let object = match (reply.find('{'), reply.rfind('}')) {
        (Some(start), Some(end)) if start < end => &reply[start..=end],
        _ => "",
    };
    match serde_json::from_str::<RawGuess>(object) {
        Ok(raw) if options.iter().any(|(name, _)| *name == raw.intent) => Guess {
            intent: raw.intent,
            confidence: raw.confidence.clamp(0.0, 1.0),
        },
        _ => Guess {
            intent: "none".into(),
            confidence: 0.0,
        },
    }
}

/// Lowercase, single spaces, no surrounding punctuation: "Show my RUNS!"
/// and "show my runs" are one cache entry.
fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_matches(|c: char| c.is_ascii_punctuation())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Vec<(String, String)> {
        vec![("draft".into(), "x".into()), ("cost".into(), "y".into())]
    }

    #[test]
    fn a_reply_with_text_around_the_json_is_read() {
        let guess = parse_guess(
            "Sure! {\"intent\": \"draft\", \"confidence\": 0.92} hope that helps",
            &options(),
        );
        assert_eq!(
            guess,
            Guess {
                intent: "draft".into(),
                confidence: 0.92
            }
        );
    }

    #[test]
    fn an_unknown_intent_or_garbage_is_none_with_no_confidence() {
        assert_eq!(
            parse_guess(
                "{\"intent\": \"launch_rockets\", \"confidence\": 1}",
                &options()
            )
            .confidence,
            0.0
        );
        assert_eq!(parse_guess("no json here", &options()).intent, "none");
    }

    #[test]
    fn normalising_folds_case_spacing_and_punctuation() {
        assert_eq!(normalise("  Show my   RUNS!"), normalise("show my runs"));
    }
}
