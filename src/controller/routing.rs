//! Free text to intent: the `router` tier (a small model) picks a flow or a
//! built-in command, with a confidence; below the threshold the bot asks.
//! The call asks for structured output (a JSON schema the provider
//! enforces, where it can) and the reply is read tolerantly either way.
//! Guesses are cached on the normalised text, so a repeated request costs
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use serde::Deserialize;
use serde_json::{Value, json};

use super::commands::{Command, command_intents, help_text};
use super::{Controller, ControllerError, Handled, Outcome, policy_hooks};
use crate::agents::{ModelCall, ModelError};
use crate::domain::{Action, CostLabel, Inbound, Outbound, Tier, action_buttons, clip};

/// What `/cost` calls the router's spend.
pub const ROUTING_FLOW: &str = "routing";

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
    confidence: Confidence,
}

/// A confidence as a number or, from a model that quotes everything, a
/// string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Confidence {
    Number(f64),
    Text(String),
}

impl Default for Confidence {
    fn default() -> Self {
        Confidence::Number(0.0)
    }
}

impl Confidence {
    fn value(&self) -> f64 {
        match self {
            Confidence::Number(n) => *n,
            Confidence::Text(t) => t.trim().parse().unwrap_or(0.0),
        }
    }
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
    async fn classify(&self, controller: &Controller, text: &str) -> Result<Guess, RouteError> {
        let key = normalise(text);
        if let Some(guess) = self.guesses.get(&key).await {
            return Ok((*guess).clone());
        }
        let guess = self.ask_router(controller, text).await?;
        self.guesses.insert(key, Arc::new(guess.clone())).await;
        Ok(guess)
    }

    async fn ask_router(&self, controller: &Controller, text: &str) -> Result<Guess, RouteError> {
        let options = controller.intent_options();
        let values = json!({
            "business": controller.settings.business,
            "options": options.iter().map(|(name, description)| json!({"name": name, "description": description})).collect::<Vec<_>>(),
            "message": text,
        });
        let prompts = controller.engine.prompts();
        let render = |name: &str| {
            prompts
                .render(name, &values)
                .map_err(|e| RouteError::Prompt(e.to_string()))
        };
        let call = ModelCall {
            tier: Tier::Router,
            label: CostLabel::Balanced,
            system: render("route_system")?,
            prompt: render("route")?,
            max_tokens: 60,
            temperature: Some(0.0),
            run_id: None,
            flow: Some(ROUTING_FLOW.into()),
            step: Some("route".into()),
            reply_schema: Some(guess_schema(&options)),
            redacted_items: 0,
        };
        let completion = controller.agents.complete(&call).await?;
        Ok(parse_guess(&completion.text, &options))
    }
}

/// The JSON schema of a guess: one of the options (or "none") and a
/// confidence. Providers with structured output hold the model to it.
fn guess_schema(options: &[(String, String)]) -> Value {
    let names: Vec<&str> = options
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(["none"])
        .collect();
    json!({
        "title": "route_guess",
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": names},
            "confidence": {"type": "number"},
        },
        "required": ["intent", "confidence"],
        "additionalProperties": false,
    })
}

/// Reads the router's answer tolerantly: the JSON object (with text around
/// it, in a code fence, or with a quoted or missing confidence), else a
/// reply that is just an option's name. Anything unreadable or naming no
/// known option is a guess of "none" with no confidence.
fn parse_guess(reply: &str, options: &[(String, String)]) -> Guess {
    let known = |intent: &str| {
        options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(intent))
            .map(|(name, _)| name.clone())
    };
    let object = match (reply.find('{'), reply.rfind('}')) {
        (Some(start), Some(end)) if start < end => &reply[start..=end],
        _ => "",
    };
    if let Ok(raw) = serde_json::from_str::<RawGuess>(object)
        && let Some(intent) = known(raw.intent.trim())
    {
        return Guess {
            intent,
            confidence: raw.confidence.value().clamp(0.0, 1.0),
        };
    }
    // A small model may answer with the bare name ("draft", "`cost`.").
    let bare = reply
        .trim()
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '_');
    match known(bare) {
        Some(intent) => Guess {
            intent,
            confidence: 1.0,
        },
        None => Guess {
            intent: "none".into(),
            confidence: 0.0,
        },
    }
}

impl Controller {
    /// Flows first, then the built-in commands.
    /// A flow free text may start. Not one named like a report command
    /// (the digest: its command decides where a report may be shown, and
    /// a group chat is not such a place), nor one an event starts (a lead
    /// qualification needs the lead that arrived).
    pub(super) fn routable_flow(&self, intent: &str) -> bool {
        let is_report = super::commands::find(intent).is_some_and(|spec| spec.report);
        self.flows
            .get(intent)
            .is_some_and(|flow| flow.on.is_none() && !is_report)
    }

    fn intent_options(&self) -> Vec<(String, String)> {
        let flows = &self.flows;
        flows
            .names()
            .filter(|name| self.routable_flow(name))
            .filter_map(|name| flows.get(name))
            .map(|flow| (flow.name.clone(), flow.description.clone()))
            .chain(command_intents().map(|(n, d)| (n.to_string(), d.to_string())))
            .collect()
    }

    /// Free text with no run waiting for it: the router guesses what it
    /// means; a confident guess is acted on, an unsure one is asked about.
    pub(super) async fn route_free_text(
        &self,
        inbound: &Inbound,
        text: &str,
    ) -> Result<Handled, ControllerError> {
        if !self.agents.is_configured() {
            return Ok(Handled::reply(
                "I act on commands until a model is configured: try /draft followed by what you need, or /help.",
            ));
        }
        // POLICY HOOK: forwarded text never picks a flow (the router would
        // read it): it becomes the request of the draft flow, quoted as data.
        if !crate::policy::origin_of(inbound).is_trusted() {
            if let Some(limited) =
                policy_hooks::limited(&self.engine, inbound, Some("draft")).await?
            {
                return Ok(limited);
            }
            return self.start_flow(inbound, "draft", text.to_string()).await;
        }
        // POLICY HOOK: a burst beyond the limits gets one sentence, no model call.
        if let Some(limited) = policy_hooks::limited(&self.engine, inbound, None).await? {
            return Ok(limited);
        }
        let guess = match self.router.classify(self, text).await {
            Ok(guess) => guess,
            Err(error) => {
                tracing::warn!(error = ?error, "routing failed");
                return Ok(Handled::reply(format!(
                    "I could not work out what you meant ({error}). Use a command instead: /help lists them."
                )));
            }
        };
        let threshold = self.agents.settings().route_confidence;
        if guess.intent != "none" && guess.confidence >= threshold {
            return self.perform(inbound, &guess.intent, text.to_string()).await;
        }
        self.ask_which(&guess, text).await
    }

    /// Offers the router's best guess as a button, and the command list.
    async fn ask_which(&self, guess: &Guess, text: &str) -> Result<Handled, ControllerError> {
        let options = self.intent_options();
        let mut choices: Vec<(String, Action)> = Vec::new();
        if let Some((name, description)) = options.iter().find(|(name, _)| *name == guess.intent) {
            choices.push((
                format!("{name}: {}", clip(description, 40)),
                Action::Route {
                    intent: name.clone(),
                    request: text.to_string(),
                },
            ));
        }
        choices.push((
            "Show the commands".into(),
            Action::Route {
                intent: "help".into(),
                request: String::new(),
            },
        ));
        let (buttons, actions) = action_buttons(choices);
        self.store.create_actions(&actions).await?;
        Ok(Handled::replies(vec![
            Outbound::text("I'm not sure what you want. Is it this?").with_buttons(buttons),
        ])
        .with_outcome(Outcome::Done))
    }

    /// Does what an intent names: start a flow with `request`, or run a
    /// built-in command.
    async fn perform(
        &self,
        inbound: &Inbound,
        intent: &str,
        request: String,
    ) -> Result<Handled, ControllerError> {
        if self.routable_flow(intent) {
            // POLICY HOOK: the flow's own limit (the person's was taken when routing).
            if let Some(limited) = policy_hooks::limited_flow(&self.engine, intent).await? {
                return Ok(limited);
            }
            return self.start_flow(inbound, intent, request).await;
        }
        self.perform_command(inbound, intent, &request).await
    }

    /// Runs the built-in command an intent names (help for anything else).
    pub(super) async fn perform_command(
        &self,
        inbound: &Inbound,
        intent: &str,
        _request: &str,
    ) -> Result<Handled, ControllerError> {
        match Command::parse(&format!("/{intent}")) {
            Ok(command) => self.command(inbound, command).await,
            Err(_) => Ok(Handled::reply(help_text())),
        }
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
    fn a_fenced_quoted_or_bare_answer_is_read_tolerantly() {
        let fenced = parse_guess(
            "```json\n{\"intent\": \"Cost\", \"confidence\": \"0.8\"}\n```",
            &options(),
        );
        assert_eq!(
            fenced,
            Guess {
                intent: "cost".into(),
                confidence: 0.8
            }
        );
        assert_eq!(parse_guess("`draft`.", &options()).intent, "draft");
    }

    #[test]
    fn the_schema_allows_only_the_options_and_none() {
        let schema = guess_schema(&options());
        assert_eq!(
            schema["properties"]["intent"]["enum"],
            json!(["draft", "cost", "none"])
        );
    }

    #[test]
    fn normalising_folds_case_spacing_and_punctuation() {
        assert_eq!(normalise("  Show my   RUNS!"), normalise("show my runs"));
    }
}
