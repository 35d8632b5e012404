//! Gateway events into [`Inbound`]s. Slash commands are deferred and button
//! presses acknowledged before anything else (Discord waits 3 s), then the
//! controller handles the update: its replies reach the outbox, which
//! answers the interaction (see [`super::interactions`]). Messages count in
//! DMs, and in servers when they mention the bot.

use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    ChannelId, CommandInteraction, ComponentInteraction, Context, EventHandler, Interaction,
    Message, Ready, ResumedEvent, User,
};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::commands;
use super::deliver::DiscordDelivery;
use super::interactions::{Open, OpenInteractions, OpenKind};
use super::rest::{self, InteractionToken, Rest, RestError};
use crate::controller::Controller;
use crate::domain::{ButtonToken, ChatRef, Inbound, InboundContent, Outbound, Platform};

pub struct Gateway {
    pub controller: Controller,
    pub rest: Arc<Rest>,
    pub delivery: Arc<DiscordDelivery>,
    pub open: Arc<OpenInteractions>,
    /// Wakes the outbox dispatcher once an update's replies are queued.
    pub wake: Arc<Notify>,
    /// The bot's own user id.
    pub bot_user_id: u64,
    /// Updates handled at once. serenity starts a task per event; a flood
    /// (a burst of commands, a spammer mentioning the bot) waits here,
    /// already acknowledged, instead of all running and holding memory.
    pub handling: Semaphore,
}

#[serenity::async_trait]
impl EventHandler for Gateway {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        tracing::info!(bot = %ready.user.name, guilds = ready.guilds.len(), "connected to the Discord gateway");
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        tracing::info!("Discord gateway session resumed");
    }

    async fn message(&self, _ctx: Context, message: Message) {
        let Some(text) = addressed_text(&message, self.bot_user_id) else {
            return;
        };
        let inbound = Inbound {
            message_id: Some(message.id.to_string()),
            ..inbound(
                message.channel_id,
                format!("message:{}", message.id),
                &message.author,
                InboundContent::Text(text),
            )
        };
        self.handle(inbound).await;
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
            format!("interaction:{}", command.id),
            &command.user,
            InboundContent::Text(commands::as_text(&command.data)),
        );
        // A refusal is known now, before the model could be involved, so
        // its deferral is already private.
        let ephemeral = !self.controller.is_allowed(&inbound);
        let token = InteractionToken(command.token);
        self.acknowledge(
            &inbound,
            &command.id.to_string(),
            token,
            OpenKind::Command { ephemeral },
        )
        .await;
        self.handle(inbound).await;
    }

    async fn on_press(&self, press: ComponentInteraction) {
        let token = InteractionToken(press.token);
        let Ok(button) = ButtonToken::try_from(press.data.custom_id) else {
            // Not a token soloist could have made: answer at once.
            let answer = serde_json::json!({
                "type": 4,
                "data": {"content": "This approval is no longer open.", "flags": rest::EPHEMERAL},
            });
            if let Err(error) = self
                .rest
                .respond(&press.id.to_string(), &token, answer)
                .await
            {
                tracing::warn!(%error, "could not answer a press of an unknown button");
            }
            return;
        };
        let inbound = Inbound {
            message_id: Some(press.message.id.to_string()),
            ..inbound(
                press.channel_id,
                format!("interaction:{}", press.id),
                &press.user,
                InboundContent::Button(button),
            )
        };
        self.acknowledge(&inbound, &press.id.to_string(), token, OpenKind::Press)
            .await;
        self.handle(inbound).await;
    }

    /// Answers Discord's 3-second deadline, and remembers the interaction
    /// so the replies can answer it. A failed acknowledgement (already
    /// answered: a replayed event) leaves replies to the channel.
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
            Ok(()) => self.open.open(
                &inbound.chat.chat_id,
                Open {
                    update_key: inbound.update_key.clone(),
                    token,
                    kind,
                    opened: Instant::now(),
                },
            ),
            Err(error) => tracing::warn!(%error, "could not acknowledge an interaction"),
        }
    }

    /// Hands the update to the controller. A failure on our side reaches
    /// the sender as a sentence (privately when an interaction allows),
    /// sent directly since the store may be what failed.
    async fn handle(&self, inbound: Inbound) {
        let Ok(_slot) = self.handling.acquire().await else {
            return;
        };
        if let Err(error) = self.controller.handle(&inbound).await {
            tracing::error!(error = ?error, "handling a Discord update failed");
            let reply = Outbound::text(error.user_message()).private_to(&inbound.update_key);
            if let Err(error) = self.delivery.send(&inbound.chat.chat_id, &reply, &[]).await {
                tracing::error!(%error, "could not tell the sender that handling failed");
            }
        }
        self.wake.notify_one();
    }
}

/// The text of a message meant for the bot: every message in a DM; in a
/// server, one that mentions the bot, without the mention. None for
/// messages from bots (this one included) and for everything else.
pub fn addressed_text(message: &Message, bot_user_id: u64) -> Option<String> {
    if message.author.bot || message.author.id.get() == bot_user_id {
        return None;
    }
    if message.guild_id.is_none() {
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

/// An update from `user` in `channel`, under `update_key`.
fn inbound(
    channel: ChannelId,
    update_key: String,
    user: &User,
    content: InboundContent,
) -> Inbound {
    Inbound {
        chat: ChatRef::new(Platform::Discord, channel.to_string()),
        update_key,
        user_id: user.id.to_string(),
        // The controller puts the owner's one name in its place.
        user_name: user
            .global_name
            .clone()
            .unwrap_or_else(|| user.name.clone()),
        message_id: None,
        content,
    }
}
