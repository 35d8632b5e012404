//! Turns an [`Inbound`] into an action. First who is speaking, then what:
//! a button press (an approval decision), a command, or a message a waiting
//! run asked for. Replies go through the outbox, queued in the same
//! transaction that marks the update handled, so a redelivered update is
//! neither lost nor answered twice.

mod cost;
mod routing;

pub use routing::{COMMAND_INTENTS, Guess, IntentRouter};

use std::fmt::Write;
use std::str::FromStr;
use std::time::Duration;

use crate::agents::HOW_TO_CONFIGURE;
use crate::domain::{
    Action, ApprovalRole, ButtonToken, Decision, Inbound, InboundContent, Outbound, Platform,
    RunId, action_buttons, clip,
};
use crate::engine::{Engine, EngineError, StartRun};
use crate::store::{ActionLookup, DecideError, InboundRecord, RunRow, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ControllerError {
    /// The sentence the operator gets when handling failed on our side.
    pub fn user_message(&self) -> String {
        let unavailable = matches!(
            self,
            ControllerError::Store(StoreError::Unavailable(_))
                | ControllerError::Engine(EngineError::Store(StoreError::Unavailable(_)))
        );
        if unavailable {
            "The database is unavailable right now, so I could not act on that. Nothing is lost: send it again in a moment (soloist doctor shows what is wrong).".into()
        } else {
            format!(
                "Something went wrong on my side ({self}). Nothing is lost; try again, and if it repeats, check the log."
            )
        }
    }
}

/// The one sentence someone not allowed gets.
pub const REFUSED: &str = "Sorry, this bot works only for its owner.";

/// The answer to a press on a decided, unknown or forged button.
pub const NOT_OPEN: &str = "This approval is no longer open.";

/// The commands soloist understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Draft(String),
    Runs,
    Run(String),
    Approvals,
    Retry(String),
    Cost,
    Memory(crate::memory::commands::MemoryCommand),
}

impl FromStr for Command {
    type Err = String;

    /// `/name args`; a Telegram-style `/name@botname` suffix is ignored.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (head, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let name = head
            .trim_start_matches('/')
            .split('@')
            .next()
            .unwrap_or_default();
        let args = args.trim().to_string();
        Ok(match name.to_ascii_lowercase().as_str() {
            "help" | "start" => Command::Help,
            "draft" => Command::Draft(args),
            "runs" => Command::Runs,
            "run" => Command::Run(args),
            "approvals" => Command::Approvals,
            "retry" => Command::Retry(args),
            "cost" => Command::Cost,
            other => match crate::memory::commands::MemoryCommand::parse(other, &args) {
                Some(command) => Command::Memory(command),
                None => return Err(name.chars().take(40).collect()),
            },
        })
    }
}

/// The commands as a platform's command menu lists them: name, what it
/// takes, what it does. `/help` prints the same list.
pub const COMMANDS: [(&str, &str, &str); 11] = [
    (
        "draft",
        "TEXT",
        "draft content in your brand voice, then approve, edit or reject it",
    ),
    ("runs", "", "recent runs and their status"),
    ("run", "ID", "one run in detail"),
    (
        "approvals",
        "",
        "drafts waiting for your decision, with their buttons",
    ),
    ("retry", "ID", "try a failed run again"),
    (
        "cost",
        "",
        "spend today and this month against the budget, by flow and by model",
    ),
    crate::memory::commands::COMMANDS[0],
    crate::memory::commands::COMMANDS[1],
    crate::memory::commands::COMMANDS[2],
    crate::memory::commands::COMMANDS[3],
    ("help", "", "this list"),
];

/// `/help`'s answer.
pub fn help_text() -> String {
    let mut text = String::from("I run your business workflows and ask before anything goes out.");
    for (name, args, description) in COMMANDS {
        let args = if args.is_empty() {
            String::new()
        } else {
            format!(" {args}")
        };
        let _ = write!(text, "\n/{name}{args}: {description}");
    }
    text.push_str("\nOr just write what you need: with a model configured, I work out which of these you mean.");
    text
}

/// What handling an update came to, for platforms that owe the person an
/// answer of their own (Telegram's button toast, Discord's interaction
/// response). Everything the bot says is queued in the outbox either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled before: dropped, nothing queued.
    Duplicate,
    /// Not an allowed user: refused and audited.
    Refused,
    /// A button press was accepted as this decision.
    Decided(Decision),
    /// A button press for an approval that is not open (stale, forged,
    /// replayed): nothing changed.
    NotOpen,
    /// Anything else: replies queued, the run driven.
    Done,
}

/// What handling an update produced: replies to queue, and a run to drive
/// once they are queued.
#[derive(Debug)]
struct Handled {
    replies: Vec<Outbound>,
    drive: Option<RunId>,
    outcome: Outcome,
}

impl Handled {
    fn reply(text: impl Into<String>) -> Self {
        Handled {
            replies: vec![Outbound::text(text)],
            drive: None,
            outcome: Outcome::Done,
        }
    }

    /// A reply only the sender of `inbound` needs to see.
    fn private(inbound: &Inbound, text: impl Into<String>) -> Self {
        Handled {
            replies: vec![Outbound::text(text).private_to(&inbound.update_key)],
            drive: None,
            outcome: Outcome::Done,
        }
    }

    fn drive(run: RunId) -> Self {
        Handled {
            replies: Vec::new(),
            drive: Some(run),
            outcome: Outcome::Done,
        }
    }

    fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Controller {
    engine: Engine,
    router: IntentRouter,
}

impl Controller {
    pub fn new(engine: Engine) -> Self {
        let models = engine.agents().settings();
        let router = IntentRouter::new(
            Duration::from_secs(models.cache_ttl_secs),
            models.cache_capacity,
        );
        Controller { engine, router }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Handles one update once, even when the platform delivers it twice.
    #[tracing::instrument(skip_all, fields(platform = %inbound.chat.platform, update = %inbound.update_key))]
    pub async fn handle(&self, inbound: &Inbound) -> Result<Outcome, ControllerError> {
        let cleaned;
        let inbound = match &inbound.content {
            // PostgreSQL text cannot hold NUL (and it shows as nothing), so
            // it goes before anything is stored, whatever the platform.
            InboundContent::Text(text) if text.contains('\0') => {
                cleaned = Inbound {
                    content: InboundContent::Text(text.replace('\0', "")),
                    ..inbound.clone()
                };
                &cleaned
            }
            _ => inbound,
        };
        let store = self.engine.store();
        if store.record_inbound(inbound).await? == InboundRecord::Duplicate {
            tracing::debug!("duplicate update dropped");
            return Ok(Outcome::Duplicate);
        }
        let handled = if self.is_allowed(inbound) {
            self.route(&self.as_known_speaker(inbound)).await?
        } else {
            store
                .audit(
                    inbound.chat.platform,
                    &inbound.user_id,
                    "refused",
                    "not an allowed user",
                )
                .await?;
            Handled::private(inbound, REFUSED).with_outcome(Outcome::Refused)
        };
        store.finish_inbound(inbound, &handled.replies).await?;
        if let Some(run) = handled.drive {
            self.engine.drive(run).await?;
        }
        Ok(handled.outcome)
    }

    /// The terminal belongs to the owner; on chat platforms only the
    /// owner's account and the configured user ids may act.
    pub fn is_allowed(&self, inbound: &Inbound) -> bool {
        let settings = self.engine.settings();
        if settings
            .owner
            .is_owner(inbound.chat.platform, &inbound.user_id)
        {
            return true;
        }
        let allowed = match inbound.chat.platform {
            Platform::Console => return true,
            Platform::Telegram => &settings.telegram.allowed_user_ids,
            Platform::Discord => &settings.discord.allowed_user_ids,
        };
        allowed.contains(&inbound.user_id)
    }

    /// The update with the speaker's one name: the owner is `business.owner`
    /// on every platform, so runs and decisions record one identity.
    fn as_known_speaker(&self, inbound: &Inbound) -> Inbound {
        let settings = self.engine.settings();
        let mut inbound = inbound.clone();
        if settings
            .owner
            .is_owner(inbound.chat.platform, &inbound.user_id)
        {
            inbound.user_name = settings.business.owner.clone();
        }
        inbound
    }

    async fn route(&self, inbound: &Inbound) -> Result<Handled, ControllerError> {
        let text = match &inbound.content {
            InboundContent::Button(token) => return self.press(inbound, token).await,
            InboundContent::Unsupported(what) => {
                return Ok(Handled::reply(format!(
                    "I can't act on {what}; send your request as a new text message (/help lists what I can do)."
                )));
            }
            InboundContent::Text(text) => text,
        };
        let trimmed = text.trim();
        let limit = self.engine.settings().engine.max_input_chars;
        let length = trimmed.chars().count();
        if trimmed.is_empty() {
            return Ok(Handled::reply(
                "That message was empty. Type /help to see what I can do.",
            ));
        }
        if length > limit {
            return Ok(Handled::reply(format!(
                "That message is {length} characters; I act on up to {limit}. It is saved in the conversation log, but I did nothing with it: send a shorter version."
            )));
        }
        if trimmed.starts_with('/') {
            return match trimmed.parse::<Command>() {
                Ok(command) => self.command(inbound, command).await,
                Err(name) => Ok(Handled::reply(format!(
                    "I don't know the command /{name}. Type /help to see what I can do."
                ))),
            };
        }
        let store = self.engine.store();
        match store
            .deliver_input(&inbound.chat, trimmed, &inbound.user_name)
            .await?
        {
            Some(run) => Ok(Handled::drive(run)),
            None => self.route_free_text(inbound, trimmed).await,
        }
    }

    /// A button: an action button (retry, cancel, raise the cap, a routing
    /// choice) or an approval decision.
    async fn press(
        &self,
        inbound: &Inbound,
        token: &ButtonToken,
    ) -> Result<Handled, ControllerError> {
        match self.engine.store().use_action(token).await? {
            ActionLookup::Taken(action) => self.act(inbound, action).await,
            ActionLookup::Used => Ok(Handled::private(inbound, "That button was already used.")),
            ActionLookup::Unknown => {
                match self.engine.decide(token, &inbound.user_name).await {
                    Ok(decided) => Ok(Handled::drive(decided.run_id)
                        .with_outcome(Outcome::Decided(decided.decision))),
                    Err(DecideError::NotOpen) => {
                        Ok(Handled::private(inbound, NOT_OPEN).with_outcome(Outcome::NotOpen))
                    }
                    Err(DecideError::Store(error)) => Err(error.into()),
                }
            }
        }
    }

    async fn act(&self, inbound: &Inbound, action: Action) -> Result<Handled, ControllerError> {
        let store = self.engine.store();
        let by = &inbound.user_name;
        match action {
            Action::RaiseDailyCap { day, amount_usd } => Ok(Handled::reply(
                if store.raise_daily_cap(&day, amount_usd).await? {
                    format!(
                        "Today's cap is raised by ${amount_usd:.2}, for today only. Press Retry on the stopped run to continue."
                    )
                } else {
                    "Today's cap was already raised once; it can be raised once a day.".to_string()
                },
            )),
            Action::RetryRun { run_id, tier } => {
                if store.retry_run(run_id, by, tier).await? {
                    Ok(Handled::drive(run_id))
                } else {
                    Ok(Handled::reply(format!(
                        "Run {} is no longer waiting for a retry.",
                        run_id.short()
                    )))
                }
            }
            Action::CancelRun { run_id } => {
                Ok(Handled::reply(if store.cancel_run(run_id, by).await? {
                    format!("Run {} is cancelled.", run_id.short())
                } else {
                    format!(
                        "Run {} is no longer waiting; nothing to cancel.",
                        run_id.short()
                    )
                }))
            }
            Action::Route { intent, request } => self.perform(inbound, &intent, request).await,
        }
    }

    /// Free text with no run waiting for it: the router guesses what it
    /// means; a confident guess is acted on, an unsure one is asked about.
    async fn route_free_text(
        &self,
        inbound: &Inbound,
        text: &str,
    ) -> Result<Handled, ControllerError> {
        if !self.engine.agents().is_configured() {
            return Ok(Handled::reply(
                "I act on commands until a model is configured: try /draft followed by what you need, or /help.",
            ));
        }
        let guess = match self.router.classify(&self.engine, text).await {
            Ok(guess) => guess,
            Err(error) => {
                tracing::warn!(error = ?error, "routing failed");
                return Ok(Handled::reply(format!(
                    "I could not work out what you meant ({error}). Use a command instead: /help lists them."
                )));
            }
        };
        let threshold = self.engine.agents().settings().route_confidence;
        if guess.intent != "none" && guess.confidence >= threshold {
            return self.perform(inbound, &guess.intent, text.to_string()).await;
        }
        self.ask_which(&guess, text).await
    }

    /// Offers the router's best guess as a button, and the command list.
    async fn ask_which(&self, guess: &Guess, text: &str) -> Result<Handled, ControllerError> {
        let options = routing::intent_options(&self.engine);
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
        self.engine.store().create_actions(&actions).await?;
        Ok(Handled {
            replies: vec![
                Outbound::text("I'm not sure what you want. Is it this?").with_buttons(buttons),
            ],
            drive: None,
            outcome: Outcome::Done,
        })
    }

    /// Does what an intent names: start a flow with `request`, or run a
    /// built-in command.
    async fn perform(
        &self,
        inbound: &Inbound,
        intent: &str,
        request: String,
    ) -> Result<Handled, ControllerError> {
        if self.engine.flows().get(intent).is_some() {
            return self.start_flow(inbound, intent, request).await;
        }
        match format!("/{intent}").parse::<Command>() {
            Ok(command) => self.command(inbound, command).await,
            Err(_) => Ok(Handled::reply(help_text())),
        }
    }

    async fn command(
        &self,
        inbound: &Inbound,
        command: Command,
    ) -> Result<Handled, ControllerError> {
        match command {
            Command::Help => Ok(Handled::reply(help_text())),
            Command::Draft(request) => self.draft(inbound, request).await,
            Command::Runs => self.list_runs().await,
            Command::Run(id) => self.show_run(&id).await,
            Command::Approvals => self.list_approvals().await,
            Command::Retry(id) => self.retry(inbound, &id).await,
            Command::Cost => Ok(Handled::reply(cost::report(&self.engine).await?)),
            Command::Memory(command) => {
                let memory = crate::memory::Memory::new(
                    self.engine.store().clone(),
                    self.engine.settings().memory.clone(),
                );
                let reply = crate::memory::commands::handle(&memory, command, inbound).await;
                Ok(Handled::reply(reply))
            }
        }
    }

    async fn draft(&self, inbound: &Inbound, request: String) -> Result<Handled, ControllerError> {
        if request.is_empty() {
            return Ok(Handled::reply(
                "Tell me what to draft, e.g. /draft a LinkedIn post announcing the new Website Audit price",
            ));
        }
        self.start_flow(inbound, "draft", request).await
    }

    async fn start_flow(
        &self,
        inbound: &Inbound,
        flow: &str,
        request: String,
    ) -> Result<Handled, ControllerError> {
        let needs_model = self
            .engine
            .flows()
            .get(flow)
            .is_some_and(|f| f.needs_model());
        if needs_model && !self.engine.agents().is_configured() {
            return Ok(Handled::reply(HOW_TO_CONFIGURE));
        }
        let run = self
            .engine
            .start(StartRun {
                flow: flow.into(),
                chat: inbound.chat.clone(),
                request,
                requested_by: inbound.user_name.clone(),
                idempotency_key: format!(
                    "inbound:{}:{}",
                    inbound.chat.platform, inbound.update_key
                ),
            })
            .await?;
        Ok(Handled::drive(run))
    }

    async fn list_runs(&self) -> Result<Handled, ControllerError> {
        let runs = self.engine.store().recent_runs(10).await?;
        if runs.is_empty() {
            return Ok(Handled::reply("No runs yet. Start one with /draft …"));
        }
        let mut text = String::from("Recent runs:");
        for run in runs {
            let _ = write!(
                text,
                "\n{}  {}  {}  {}",
                run.id.short(),
                run.flow,
                run.status,
                clip(&run.input.request, 50)
            );
        }
        Ok(Handled::reply(text))
    }

    async fn show_run(&self, id: &str) -> Result<Handled, ControllerError> {
        let run = match self.find_run(id).await? {
            Ok(run) => run,
            Err(message) => return Ok(Handled::reply(message)),
        };
        let state = self.engine.state(run.id).await?;
        let ledger = self.engine.store().ledger_for_run(run.id).await?;
        let cost: f64 = ledger.iter().filter_map(|e| e.cost_usd).sum();
        let tokens: i64 = ledger
            .iter()
            .map(|e| e.input_tokens + e.output_tokens)
            .sum();
        let mut text = format!(
            "Run {} ({}): {}\nRequest: {}\nSteps done: {}\nModel calls: {}, {} tokens, ${:.4}",
            run.id.short(),
            run.flow,
            run.status,
            clip(&run.input.request, 200),
            if state.outputs.is_empty() {
                "none".to_string()
            } else {
                state.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
            },
            ledger.len(),
            tokens,
            cost,
        );
        if let Some(summary) = &state.summary {
            let _ = write!(text, "\nOutcome: {summary}");
        }
        if let Some(error) = &state.error {
            let _ = write!(text, "\nError: {error}");
        }
        Ok(Handled::reply(text))
    }

    async fn list_approvals(&self) -> Result<Handled, ControllerError> {
        let approvals = self.engine.store().pending_approvals().await?;
        if approvals.is_empty() {
            return Ok(Handled::reply("No approvals are waiting."));
        }
        let replies = approvals
            .into_iter()
            .map(|a| {
                Outbound::text(format!(
                    "Waiting for your decision (run {}):\n\n{}",
                    a.run_id.short(),
                    a.draft
                ))
                .with_buttons(a.buttons)
                .linked_to(a.id, ApprovalRole::Offer)
            })
            .collect();
        Ok(Handled {
            replies,
            drive: None,
            outcome: Outcome::Done,
        })
    }

    async fn retry(&self, inbound: &Inbound, id: &str) -> Result<Handled, ControllerError> {
        let run = match self.find_run(id).await? {
            Ok(run) => run,
            Err(message) => return Ok(Handled::reply(message)),
        };
        if self
            .engine
            .store()
            .retry_run(run.id, &inbound.user_name, None)
            .await?
        {
            Ok(Handled::drive(run.id))
        } else {
            Ok(Handled::reply(format!(
                "Run {} is {}, not failed; there is nothing to retry.",
                run.id.short(),
                run.status
            )))
        }
    }

    /// The run a person means by a (short) id, or a sentence saying why
    /// there is none.
    async fn find_run(&self, id: &str) -> Result<Result<RunRow, String>, ControllerError> {
        let id = id.trim();
        if id.len() < 4 {
            return Ok(Err(
                "Give me a run id (at least its first 4 characters); /runs lists them.".into(),
            ));
        }
        let mut matches = self.engine.store().runs_with_prefix(id).await?;
        Ok(match matches.len() {
            0 => Err(format!(
                "No run starts with '{}'. /runs lists recent ones.",
                clip(id, 40)
            )),
            1 => Ok(matches.remove(0)),
            _ => Err(format!(
                "Several runs start with '{}'; give more of the id.",
                clip(id, 40)
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_arguments_and_bot_suffixes() {
        assert_eq!(
            "/draft a post".parse::<Command>(),
            Ok(Command::Draft("a post".into()))
        );
        assert_eq!(
            "/draft@soloist_bot  hi ".parse::<Command>(),
            Ok(Command::Draft("hi".into()))
        );
        assert_eq!("/RUNS".parse::<Command>(), Ok(Command::Runs));
        assert_eq!("/cost".parse::<Command>(), Ok(Command::Cost));
        assert_eq!(
            "/unknowncommand with args".parse::<Command>(),
            Err("unknowncommand".into())
        );
    }
}
