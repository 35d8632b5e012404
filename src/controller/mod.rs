//! Turns an [`Inbound`] into an action. First who is speaking, then what:
//! a button press (`buttons`), a command (`commands`, whose table is the one
//! command list), a message a waiting run asked for, or free text for the
//! router (`routing`). Reports live in `reports`, `/cost` in `cost`, the
//! guardrails' rate limits, `/run` lines and `/policy` in `policy_hooks`;
//! memory commands in `memory`; `/autonomy` in `autonomy`.
//! Replies go through the outbox, queued in the same transaction that marks
//! the update handled (and, for a press or a run's input, that makes the
//! change), so a redelivered update is neither lost nor acted on twice.

pub mod access;
mod autonomy;
mod buttons;
mod commands;
mod cost;
mod funnel;
mod leads;
mod memory;
mod offers;
mod policy_hooks;
mod reports;
mod routing;
mod schedules;

pub use commands::{COMMAND_TABLE, COMMANDS, Command, CommandSpec, help_text};
pub use routing::{Guess, IntentRouter};

use std::sync::Arc;
use std::time::Duration;

use crate::agents::Agents;
use crate::config::Settings;
use crate::domain::{Decision, Inbound, InboundContent, Outbound, RunId};
use crate::engine::{Actor, Engine, EngineError};
use crate::flows::FlowCatalog;
use crate::store::{InboundRecord, Store, StoreError};

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

pub use access::REFUSED;

/// The answer to a press on a decided, unknown or forged button.
pub const NOT_OPEN: &str = "This approval is no longer open.";

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
pub struct Handled {
    replies: Vec<Outbound>,
    drive: Option<RunId>,
    outcome: Outcome,
    /// The update was already marked handled (with these replies) in the
    /// transaction that made its change.
    finished: bool,
}

impl Handled {
    fn replies(replies: Vec<Outbound>) -> Self {
        Handled {
            replies,
            drive: None,
            outcome: Outcome::Done,
            finished: false,
        }
    }

    fn reply(text: impl Into<String>) -> Self {
        Handled::replies(vec![Outbound::text(text)])
    }

    /// A reply only the sender of `inbound` needs to see.
    fn private(inbound: &Inbound, text: impl Into<String>) -> Self {
        Handled::replies(vec![Outbound::text(text).private_to(&inbound.update_key)])
    }

    fn drive(run: RunId) -> Self {
        Handled {
            drive: Some(run),
            ..Handled::replies(Vec::new())
        }
    }

    fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    fn finished(mut self) -> Self {
        self.finished = true;
        self
    }
}

/// The person acting, as the engine journals them.
fn actor(inbound: &Inbound) -> Actor<'_> {
    Actor {
        name: &inbound.user_name,
        user_id: &inbound.user_id,
    }
}

/// Cheap to clone. Holds its own handles; the engine is for transitions.
#[derive(Debug, Clone)]
pub struct Controller {
    engine: Engine,
    store: Store,
    agents: Agents,
    flows: FlowCatalog,
    settings: Arc<Settings>,
    router: IntentRouter,
}

impl Controller {
    pub fn new(engine: Engine) -> Self {
        let models = engine.agents().settings();
        let router = IntentRouter::new(
            Duration::from_secs(models.cache_ttl_secs),
            models.cache_capacity,
        );
        Controller {
            store: engine.store().clone(),
            agents: engine.agents().clone(),
            flows: engine.flows().clone(),
            settings: engine.settings_handle(),
            engine,
            router,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
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
        let store = &self.store;
        let access = access::decide(&self.settings, inbound);
        let inbound = &access::keepable(access, inbound);
        if access == access::Access::Allowed
            && let Some(outcome) = self.answer_read_only(inbound).await?
        {
            return Ok(outcome);
        }
        if store.record_inbound(inbound).await? == InboundRecord::Duplicate {
            tracing::debug!("duplicate update dropped");
            return Ok(Outcome::Duplicate);
        }
        let handled = if access == access::Access::Allowed {
            self.route(&self.as_known_speaker(inbound)).await?
        } else {
            let detail = access::audit_detail(access, inbound);
            store
                .audit(inbound.chat.platform, &inbound.user_id, "refused", &detail)
                .await?;
            Handled {
                replies: access::refusal(access, inbound).into_iter().collect(),
                drive: None,
                outcome: Outcome::Refused,
                finished: false,
            }
        };
        if !handled.finished {
            store.finish_inbound(inbound, &handled.replies).await?;
        }
        if let Some(run) = handled.drive {
            self.engine.drive(run).await?;
        }
        Ok(handled.outcome)
    }

    /// A command that only reads (`/help`, a report) is answered first and
    /// recorded with its reply in one transaction: one commit, not one to
    /// record it and one to finish it. None for anything else.
    async fn answer_read_only(
        &self,
        inbound: &Inbound,
    ) -> Result<Option<Outcome>, ControllerError> {
        let InboundContent::Text(text) = &inbound.content else {
            return Ok(None);
        };
        let trimmed = text.trim();
        if trimmed.chars().count() > self.settings.engine.max_input_chars {
            return Ok(None);
        }
        let Ok(command) = Command::parse(trimmed) else {
            return Ok(None);
        };
        if !commands::READ_ONLY.contains(&command.spec.name) {
            return Ok(None);
        }
        let handled = self
            .command(&self.as_known_speaker(inbound), command)
            .await?;
        let answered = self.store.answer_in_one(inbound, &handled.replies).await?;
        Ok(Some(if answered {
            handled.outcome
        } else {
            tracing::debug!("duplicate update dropped");
            Outcome::Duplicate
        }))
    }

    /// The terminal belongs to the owner; on chat platforms only the
    /// owner's account and the configured user ids may act.
    pub fn is_allowed(&self, inbound: &Inbound) -> bool {
        access::decide(&self.settings, inbound) == access::Access::Allowed
    }

    /// The update with the speaker's one name: the owner is `business.owner`
    /// on every platform, so runs and decisions record one identity.
    fn as_known_speaker(&self, inbound: &Inbound) -> Inbound {
        let settings = &self.settings;
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
        let limit = self.settings.engine.max_input_chars;
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
            return match Command::parse(trimmed) {
                Ok(command) => self.command(inbound, command).await,
                Err(name) => Ok(Handled::reply(format!(
                    "I don't know the command /{name}. Type /help to see what I can do."
                ))),
            };
        }
        // The input and the update's handling commit together: a crash in
        // between must not hand the text to the run and then route it
        // again as a new request.
        let mut tx = self.store.begin().await?;
        match self
            .engine
            .deliver_input_in(&mut tx, &inbound.chat, trimmed, actor(inbound))
            .await?
        {
            Some(run) => {
                tx.finish_inbound(inbound, &[]).await?;
                tx.commit().await?;
                Ok(Handled::drive(run).finished())
            }
            None => {
                tx.rollback().await?;
                self.route_free_text(inbound, trimmed).await
            }
        }
    }
}
