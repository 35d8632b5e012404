//! Turns an [`Inbound`] into an action. First who is speaking, then what:
//! a button press (an approval decision), a command, or a message a waiting
//! run asked for. Replies go through the outbox, queued in the same
//! transaction that marks the update handled, so a redelivered update is
//! neither lost nor answered twice.

use std::fmt::Write;
use std::str::FromStr;

use crate::agents::HOW_TO_CONFIGURE;
use crate::domain::{ApprovalRole, Inbound, InboundContent, Outbound, Platform, RunId, clip};
use crate::engine::{Engine, EngineError, StartRun};
use crate::store::{DecideError, InboundRecord, RunRow, StoreError};

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

/// The commands soloist understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Draft(String),
    Runs,
    Run(String),
    Approvals,
    Retry(String),
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
            _ => return Err(name.chars().take(40).collect()),
        })
    }
}

pub const HELP: &str = "I run your business workflows and ask before anything goes out.\n\
/draft TEXT: draft content in your brand voice, then approve, edit or reject it\n\
/runs: recent runs and their status\n\
/run ID: one run in detail\n\
/approvals: drafts waiting for your decision, with their buttons\n\
/retry ID: try a failed run again\n\
/help: this list";

/// What handling an update produced: replies to queue, and a run to drive
/// once they are queued.
#[derive(Debug, Default)]
struct Handled {
    replies: Vec<Outbound>,
    drive: Option<RunId>,
}

impl Handled {
    fn reply(text: impl Into<String>) -> Self {
        Handled {
            replies: vec![Outbound::text(text)],
            drive: None,
        }
    }

    fn drive(run: RunId) -> Self {
        Handled {
            replies: Vec::new(),
            drive: Some(run),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Controller {
    engine: Engine,
}

impl Controller {
    pub fn new(engine: Engine) -> Self {
        Controller { engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Handles one update once, even when the platform delivers it twice.
    #[tracing::instrument(skip_all, fields(platform = %inbound.chat.platform, update = %inbound.update_key))]
    pub async fn handle(&self, inbound: &Inbound) -> Result<(), ControllerError> {
        let store = self.engine.store();
        if store.record_inbound(inbound).await? == InboundRecord::Duplicate {
            tracing::debug!("duplicate update dropped");
            return Ok(());
        }
        let handled = if self.is_allowed(inbound) {
            self.route(inbound).await?
        } else {
            store
                .audit(
                    inbound.chat.platform,
                    &inbound.user_id,
                    "refused",
                    "not an allowed user",
                )
                .await?;
            Handled::reply("Sorry, this bot works only for its owner.")
        };
        store.finish_inbound(inbound, &handled.replies).await?;
        if let Some(run) = handled.drive {
            self.engine.drive(run).await?;
        }
        Ok(())
    }

    /// The terminal belongs to the owner; on chat platforms only the
    /// configured user ids may act.
    fn is_allowed(&self, inbound: &Inbound) -> bool {
        let settings = self.engine.settings();
        let allowed = match inbound.chat.platform {
            Platform::Console => return true,
            Platform::Telegram => &settings.telegram.allowed_user_ids,
            Platform::Discord => &settings.discord.allowed_user_ids,
        };
        allowed.contains(&inbound.user_id)
    }

    async fn route(&self, inbound: &Inbound) -> Result<Handled, ControllerError> {
        let text = match &inbound.content {
            InboundContent::Button(token) => {
                return match self.engine.decide(token, &inbound.user_name).await {
                    Ok(decided) => Ok(Handled::drive(decided.run_id)),
                    Err(DecideError::NotOpen) => {
                        Ok(Handled::reply("This approval is no longer open."))
                    }
                    Err(DecideError::Store(error)) => Err(error.into()),
                };
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
            None => Ok(Handled::reply(
                "I act on commands for now: try /draft followed by what you need, or /help.",
            )),
        }
    }

    async fn command(
        &self,
        inbound: &Inbound,
        command: Command,
    ) -> Result<Handled, ControllerError> {
        match command {
            Command::Help => Ok(Handled::reply(HELP)),
            Command::Draft(request) => self.draft(inbound, request).await,
            Command::Runs => self.list_runs().await,
            Command::Run(id) => self.show_run(&id).await,
            Command::Approvals => self.list_approvals().await,
            Command::Retry(id) => self.retry(inbound, &id).await,
        }
    }

    async fn draft(&self, inbound: &Inbound, request: String) -> Result<Handled, ControllerError> {
        if request.is_empty() {
            return Ok(Handled::reply(
                "Tell me what to draft, e.g. /draft a LinkedIn post announcing the new Website Audit price",
            ));
        }
        let needs_model = self
            .engine
            .flows()
            .get("draft")
            .is_some_and(|f| f.needs_model());
        if needs_model && !self.engine.agents().is_configured() {
            return Ok(Handled::reply(HOW_TO_CONFIGURE));
        }
        let run = self
            .engine
            .start(StartRun {
                flow: "draft".into(),
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
            .retry_run(run.id, &inbound.user_name)
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
        assert_eq!(
            "/unknowncommand with args".parse::<Command>(),
            Err("unknowncommand".into())
        );
    }
}
