//! Gateway events into the front door's arrivals. Each is recorded first
//! (so a crash after Discord was answered loses nothing), then a slash
//! command is deferred or a press acknowledged (Discord waits 3 s), then
//! the front door hands it to the controller in its channel's lane; its
//! replies reach the outbox, which answers the interaction (see
//! [`super::interactions`]). Messages count in DMs, and in servers when
//! they mention the bot.

use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    ChannelId, CommandInteraction, ComponentInteraction, ConnectionStage, Context, EventHandler,
    GuildId, Interaction, Message, Ready, ResumedEvent, ShardStageUpdateEvent, User,
};
use tokio::time::Instant;

use super::commands;
use super::deliver::DiscordDelivery;
use super::interactions::{Open, OpenInteractions, OpenKind};
use super::recover::Recovery;
use super::rest::{self, InteractionToken, Rest, RestError};
use crate::controller::{Controller, ControllerError, NOT_OPEN, Outcome};
use crate::domain::{ButtonToken, ChatKind, ChatRef, Inbound, InboundContent, Outbound, Platform};
use crate::frontdoor::{Arrival, FrontDoor, Side};

/// What the front door does on Discord's side: nothing after handling
/// (the outbox answers the interaction), and a failure said directly.
pub struct DiscordSide {
    pub delivery: Arc<DiscordDelivery>,
}

impl Side for DiscordSide {
    type Extra = ();

    fn platform(&self) -> Platform {
        Platform::Discord
    }

    async fn answered(&self, _arrival: &Arrival<()>, _result: &Result<Outcome, ControllerError>) {}

    /// Privately when an interaction allows, sent directly since the store
    /// may be what failed.
    async fn tell(&self, arrival: &Arrival<()>, text: &str) {
        let inbound = &arrival.inbound;
        let reply = Outbound::text(text).private_to(&inbound.update_key);
        if let Err(error) = self
            .delivery
            .send(&inbound.chat.chat_id, &reply, None, &[])
            .await
        {
            tracing::error!(%error, "could not tell the sender that handling failed");
        }
    }
}

pub struct Gateway {
    pub door: Arc<FrontDoor<DiscordSide>>,
    pub controller: Controller,
    pub rest: Arc<Rest>,
    pub open: Arc<OpenInteractions>,
    /// The bot's own user id.
    pub bot_user_id: u64,
    /// Where the gateway's connection state is reported (`/healthz`).
    pub health: crate::http::Health,
    /// Mentions missed between sessions, read back from channel history.
    pub recovery: Arc<Recovery>,
}

#[serenity::async_trait]
impl EventHandler for Gateway {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        tracing::info!(bot = %ready.user.name, guilds = ready.guilds.len(), "connected to the Discord gateway");
        self.health.set(super::HEALTH, true);
        // A READY is a new session (this process took the gateway, or a
        // dropped one could not be resumed): what Discord sent in between
        // is not replayed, so read the channels' history for it.
        self.recovery.after_new_session().await;
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        tracing::info!("Discord gateway session resumed");
        self.health.set(super::HEALTH, true);
        self.recovery.resumed();
    }

    /// Leaving the connected stage (a dropped connection, a resume under
    /// way) is reported until `ready` or `resume` says it is back.
    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        if event.new != ConnectionStage::Connected {
            self.recovery.connection_lost();
            self.health
                .down(super::HEALTH, format!("the gateway is {}", event.new));
        }
    }

    async fn message(&self, _ctx: Context, message: Message) {
        let kind = chat_kind(message.guild_id);
        let Some(update) = message_arrival(&message, self.bot_user_id, kind) else {
            return;
        };
        if let Some(fresh) = self.record(update).await {
            self.door.queue(vec![fresh]).await;
        }
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Command(command) => self.on_command(command).await,
            Interaction::Component(press) => self.on_press(press).await,
            _ => {}
        }
    }
}

impl Gateway {
    async fn on_command(&self, command: CommandInteraction) {
        let inbound = inbound(
            command.channel_id,
            chat_kind(command.guild_id),
            format!("interaction:{}", command.id),
            &command.user,
            InboundContent::Text(commands::as_text(&command.data)),
        );
        // A refusal is known now, before the model could be involved, so
        // its deferral is already private.
        let ephemeral = !self.controller.is_allowed(&inbound);
        let token = InteractionToken(command.token);
        let Some(fresh) = self.record(arrival(command.id.get(), inbound)).await else {
            return self.say_unrecorded(&command.id.to_string(), &token).await;
        };
        self.acknowledge(
            &fresh.inbound,
            &command.id.to_string(),
            token,
            OpenKind::Command { ephemeral },
        )
        .await;
        self.door.queue(vec![fresh]).await;
    }

    async fn on_press(&self, press: ComponentInteraction) {
        let token = InteractionToken(press.token);
        let Ok(button) = ButtonToken::try_from(press.data.custom_id) else {
            // Not a token soloist could have made: answer at once.
            return self
                .answer_now(&press.id.to_string(), &token, NOT_OPEN)
                .await;
        };
        let inbound = Inbound {
            message_id: Some(press.message.id.to_string()),
            ..inbound(
                press.channel_id,
                chat_kind(press.guild_id),
                format!("interaction:{}", press.id),
                &press.user,
                InboundContent::Button(button),
            )
        };
        let Some(fresh) = self.record(arrival(press.id.get(), inbound)).await else {
            return self.say_unrecorded(&press.id.to_string(), &token).await;
        };
        self.acknowledge(
            &fresh.inbound,
            &press.id.to_string(),
            token,
            OpenKind::Press,
        )
        .await;
        self.door.queue(vec![fresh]).await;
    }

    /// Records the update before Discord is answered. None when it was
    /// recorded before (a replayed event: handled already or queued after
    /// a restart) or could not be recorded (logged).
    async fn record(&self, arrival: Arrival<()>) -> Option<Arrival<()>> {
        match self.door.record(Platform::Discord, vec![arrival]).await {
            Ok(mut fresh) => fresh.pop(),
            Err(error) => {
                tracing::error!(error = ?error, "could not record a Discord update");
                None
            }
        }
    }

    /// An interaction that could not be recorded (or was seen before) is
    /// not left "thinking…": a replayed one is already answered (this
    /// fails quietly), a new one hears that nothing was done.
    async fn say_unrecorded(&self, interaction_id: &str, token: &InteractionToken) {
        let text = "I could not take that in right now (my database did not answer), so nothing was done. Send it again in a moment.";
        self.answer_now(interaction_id, token, text).await;
    }

    /// Answers an interaction at once, privately.
    async fn answer_now(&self, interaction_id: &str, token: &InteractionToken, text: &str) {
        let answer = serde_json::json!({
            "type": 4,
            "data": {"content": text, "flags": rest::EPHEMERAL},
        });
        if let Err(error) = self.rest.respond(interaction_id, token, answer).await {
            tracing::debug!(%error, "could not answer an interaction at once");
        }
    }

    /// Answers Discord's 3-second deadline, and remembers the interaction
    /// (in memory and in the store) so the replies can answer it, after a
    /// restart too. A failed acknowledgement (already answered: a replayed
    /// event) leaves replies to the channel.
    async fn acknowledge(
        &self,
        inbound: &Inbound,
        interaction_id: &str,
        token: InteractionToken,
        kind: OpenKind,
    ) {
        let callback = match kind {
            OpenKind::Command { ephemeral } => rest::defer_reply(ephemeral),
            OpenKind::Press => rest::defer_update(),
        };
        let mut answered = self
            .rest
            .respond(interaction_id, &token, callback.clone())
            .await;
        // A short rate limit still leaves time inside the 3 s: wait, once.
        if let Err(RestError::RateLimited { retry_after, .. }) = answered
            && retry_after < Duration::from_secs(2)
        {
            tokio::time::sleep(retry_after).await;
            answered = self.rest.respond(interaction_id, &token, callback).await;
        }
        match answered {
            Ok(()) => {
                let open = Open {
                    update_key: inbound.update_key.clone(),
                    token,
                    kind,
                    opened: Instant::now(),
                };
                self.open.remember(&inbound.chat.chat_id, open).await;
            }
            Err(error) => tracing::warn!(%error, "could not acknowledge an interaction"),
        }
    }
}

/// A message as the front door takes it, keyed on its id (so a message
/// seen live and read again from history is one update), when it is meant
/// for the bot (see [`addressed_text`]). `kind`: a DM or a server channel
/// (the gateway says by the guild id; history by the channel asked for).
pub(super) fn message_arrival(
    message: &Message,
    bot_user_id: u64,
    kind: ChatKind,
) -> Option<Arrival<()>> {
    let text = addressed_text(message, bot_user_id, kind)?;
    let inbound = Inbound {
        message_id: Some(message.id.to_string()),
        ..inbound(
            message.channel_id,
            kind,
            format!("message:{}", message.id),
            &message.author,
            InboundContent::Text(text),
        )
    };
    Some(arrival(message.id.get(), inbound))
}

/// An update under its Discord id.
fn arrival(id: u64, inbound: Inbound) -> Arrival<()> {
    Arrival {
        // Snowflakes fit in an i64 until the year 2084.
        update_id: id as i64,
        inbound,
        extra: (),
    }
}

/// A server channel when the event names a guild, else a DM.
fn chat_kind(guild: Option<GuildId>) -> ChatKind {
    if guild.is_some() {
        ChatKind::Group
    } else {
        ChatKind::Private
    }
}

/// The text of a message meant for the bot: every message in a DM; in a
/// server, one that mentions the bot, without the mention. None for
/// messages from bots (this one included) and for everything else.
fn addressed_text(message: &Message, bot_user_id: u64, kind: ChatKind) -> Option<String> {
    if message.author.bot || message.author.id.get() == bot_user_id {
        return None;
    }
    if kind == ChatKind::Private {
        return Some(message.content.trim().to_string());
    }
    let mentioned = message
        .mentions
        .iter()
        .any(|user| user.id.get() == bot_user_id);
    if !mentioned {
        return None;
    }
    let text = message
        .content
        .replace(&format!("<@{bot_user_id}>"), " ")
        .replace(&format!("<@!{bot_user_id}>"), " ");
    Some(text.trim().to_string())
}

/// An update from `user` in `channel` (a DM or a server channel), under
/// `update_key`.
fn inbound(
    channel: ChannelId,
    chat_kind: ChatKind,
    update_key: String,
    user: &User,
    content: InboundContent,
) -> Inbound {
    Inbound {
        message_id: None,
        chat_kind,
        ..Inbound::new(
            ChatRef::new(Platform::Discord, channel.to_string()),
            update_key,
            user.id.to_string(),
            // The controller puts the owner's one name in its place.
            user.global_name
                .clone()
                .unwrap_or_else(|| user.name.clone()),
            content,
        )
    }
}
