//! Discord: slash commands, mentions and DMs in through the gateway
//! (serenity), the outbox out through REST, approvals as buttons.
//!
//! - [`gateway`]: events into the front door's arrivals: recorded first,
//!   then interactions acknowledged (within Discord's 3 s), then handled
//!   through [`crate::frontdoor`] (per-channel lanes).
//! - [`interactions`]: interactions still waiting for an answer, and where
//!   each outbox message goes because of them.
//! - [`deliver`]: the outbox's Discord side ([`crate::outbox::Deliver`]).
//! - [`render`]: escaping, the 2000-character limit, buttons.
//! - [`commands`]: the slash commands registered at start.
//! - [`rest`]: the REST calls, 429s included.
//! - [`recover`]: after a new session (a takeover, a reconnect that could
//!   not resume), mentions sent in the gap read back from channel history.
//!
//! serenity keeps the gateway; its HTTP client is used only for the
//! gateway URL it asks for itself. soloist's own REST calls use reqwest
//! because, pointed at a custom base URL, serenity's client must run
//! without its rate limiter, and then a 429's `retry_after` and `global`
//! flag are lost in its error; soloist needs both.

mod commands;
mod deliver;
mod gateway;
mod interactions;
mod recover;
mod render;
mod rest;

pub use render::{CONTENT_LIMIT, escape_markdown};

use std::sync::Arc;

use serenity::all::{Client, ClientBuilder, GatewayIntents, HttpBuilder};
use tokio_util::sync::CancellationToken;

use crate::domain::Platform;

use crate::config::DiscordSettings;
use crate::frontdoor::{Bounds, FrontDoor, Handles};
use crate::outbox::RateLimits;
use crate::store::StoreError;
use deliver::DiscordDelivery;
use gateway::{DiscordSide, Gateway};
use interactions::OpenInteractions;
use recover::Recovery;
use rest::{Rest, RestError};

/// Channels handled at once; more wait their turn (already recorded and
/// acknowledged).
const CHANNELS_AT_ONCE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    #[error("discord.api_url must end in /api/v10 (it is '{0}')")]
    ApiUrl(String),
    #[error("the Discord token is not usable: {0}")]
    Token(String),
    #[error(
        "Discord refused the bot token: check DISCORD_TOKEN (the bot token from the developer portal)"
    )]
    Unauthorized,
    #[error("could not start on Discord ({step})")]
    Start {
        step: &'static str,
        #[source]
        source: RestError,
    },
    #[error("the Discord gateway stopped: {0}")]
    Gateway(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the owner's DM channel could not be had: `Refused` will not change
/// by trying again (a wrong id, a bot the owner blocked); `Transient` may.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("Discord refused to open a DM with the owner: {0}")]
    Refused(String),
    #[error("Discord could not open a DM with the owner now: {0}")]
    Transient(String),
}

/// The DM channel of `user_id` (the owner), for messages the bot sends on
/// its own, such as the digest when no digest channel is configured.
pub async fn dm_channel(settings: &DiscordSettings, user_id: &str) -> Result<String, DmError> {
    let token = settings.token.expose().unwrap_or_default();
    let rest = Rest::new(&settings.api_url, token).map_err(DmError::Refused)?;
    rest.dm_channel(user_id).await.map_err(|error| {
        if error.is_refusal() {
            DmError::Refused(error.to_string())
        } else {
            DmError::Transient(error.to_string())
        }
    })
}

/// Messages in servers (to see mentions) and DMs. Not message content: a
/// message that mentions the bot, and any DM, carries its content without
/// that privileged intent.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGES | GatewayIntents::DIRECT_MESSAGES
}

/// The adapter's name in `/healthz`.
const HEALTH: &str = "discord";

/// Connects, registers the slash commands, and serves until `shutdown`.
/// Reports to
/// `handles.health`: connected once the gateway is ready, not connected
/// (with why) before, while it reconnects, and once stopped.
pub async fn run(handles: Handles, shutdown: CancellationToken) -> Result<(), DiscordError> {
    let health = handles.health.clone();
    health
        .track(
            HEALTH,
            "starting: the gateway is not ready yet",
            serve_bot(handles, shutdown),
        )
        .await
}

async fn serve_bot(handles: Handles, shutdown: CancellationToken) -> Result<(), DiscordError> {
    let settings = &handles.settings.discord;
    let token = settings.token.expose().unwrap_or_default();
    let proxy = serenity_base(&settings.api_url)?;
    let rest = Arc::new(Rest::new(&settings.api_url, token).map_err(DiscordError::Token)?);
    let introduced = introduce(&rest, settings).await?;

    let open = Arc::new(OpenInteractions::durable(handles.store.clone()).await?);
    let delivery = Arc::new(DiscordDelivery::new(
        rest.clone(),
        open.clone(),
        handles.store.clone(),
    ));
    let limits = RateLimits::discord().when(settings.rate_limits);
    let stop_outbox = shutdown.child_token();
    let outbox = crate::outbox::start(
        handles.store.clone(),
        delivery.clone(),
        limits,
        stop_outbox.clone(),
    );
    let lanes_stop = shutdown.child_token();
    let door = FrontDoor::new(
        handles.clone(),
        DiscordSide { delivery },
        outbox.waker(),
        Bounds {
            running: CHANNELS_AT_ONCE,
            ..Bounds::default()
        },
        lanes_stop.clone(),
    );
    door.replay_unhandled(Platform::Discord).await?;
    door.forget_old_payloads(Platform::Discord, settings.keep_payload_hours)
        .await?;
    // One gateway session per shard among the processes on this database
    // (a leased row, as Telegram's poller): serenity cannot resume another
    // process's session, so a new holder identifies afresh.
    let lease = format!("discord:gateway:{}:shard:0", introduced.bot_user_id);
    let store = handles.store.clone();
    let served = crate::coordination::while_leader(&store, &lease, &shutdown, |held| {
        let recovery = Arc::new(Recovery::new(
            door.clone(),
            store.clone(),
            rest.clone(),
            introduced.bot_user_id,
            settings.allowed_channel_ids.clone(),
            held.clone(),
        ));
        let handler = Gateway {
            door: door.clone(),
            controller: handles.controller.clone(),
            rest: rest.clone(),
            open: open.clone(),
            bot_user_id: introduced.bot_user_id,
            health: handles.health.clone(),
            recovery,
        };
        let gateway_url = introduced.gateway_url.clone();
        let proxy = proxy.clone();
        let health = handles.health.clone();
        async move {
            let http = HttpBuilder::new(token)
                .proxy(proxy)
                .ratelimiter_disabled(true)
                .build();
            let client = ClientBuilder::new_with_http(http, intents())
                .event_handler(handler)
                .await
                .map_err(|e| DiscordError::Gateway(e.to_string()))?;
            // serenity asked /gateway itself and, had that failed, would fall
            // back to Discord's public gateway; the URL from /gateway/bot is
            // the one.
            *client.ws_url.lock().await = gateway_url;
            let watch = tokio::spawn(watch_shards(client.shard_manager.clone(), health));
            let served = serve(client, held).await;
            watch.abort();
            served
        }
    })
    .await;
    lanes_stop.cancel();
    stop_outbox.cancel();
    outbox.stopped().await;
    served
}

/// What the start-up calls learn.
struct Introduced {
    bot_user_id: u64,
    gateway_url: String,
}

/// Checks the token, registers the slash commands (in one guild when
/// `guild_id` is set), and asks for the gateway URL.
async fn introduce(rest: &Rest, settings: &DiscordSettings) -> Result<Introduced, DiscordError> {
    let start = |step| move |source| start_error(step, source);
    rest.application_id()
        .await
        .map_err(start("reading the bot's application"))?;
    let bot_user_id = rest
        .bot_user_id()
        .await
        .map_err(start("reading the bot's user"))?;
    let guild = Some(settings.guild_id.trim()).filter(|g| !g.is_empty());
    let in_servers = !settings.allowed_channel_ids.is_empty();
    rest.set_commands(guild, commands::definitions(in_servers))
        .await
        .map_err(start("registering the slash commands"))?;
    let gateway_url = rest
        .gateway_url()
        .await
        .map_err(start("asking for the gateway URL"))?;
    Ok(Introduced {
        bot_user_id,
        gateway_url,
    })
}

/// Reports the gateway's state from serenity's shard manager twice a
/// second. Event handlers alone cannot: when a dropped connection cannot be
/// resumed, serenity restarts the shard without a stage event, and the
/// last event said "connected" (a `/healthz` that stayed 200 through an
/// outage).
async fn watch_shards(shards: Arc<serenity::all::ShardManager>, health: crate::http::Health) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        every.tick().await;
        let stage = shards
            .runners
            .lock()
            .await
            .values()
            .next()
            .map(|runner| runner.stage);
        match stage {
            Some(serenity::all::ConnectionStage::Connected) => health.set(HEALTH, true),
            Some(stage) => health.down(HEALTH, format!("the gateway is {stage}")),
            None => health.down(HEALTH, "the gateway is reconnecting".to_string()),
        }
    }
}

/// Runs the gateway until `shutdown`, or until it stops (the error says
/// why).
async fn serve(mut client: Client, shutdown: CancellationToken) -> Result<(), DiscordError> {
    let shards = client.shard_manager.clone();
    let outcome = tokio::select! {
        result = client.start() => Err(DiscordError::Gateway(match result {
            Ok(()) => "the connection ended".into(),
            Err(error) => error.to_string(),
        })),
        _ = shutdown.cancelled() => Ok(()),
    };
    shards.shutdown_all().await;
    outcome
}

/// What serenity's `proxy` takes: the API URL without `/api/v10` (serenity
/// swaps it for `https://discord.com` in its own URLs).
fn serenity_base(api_url: &str) -> Result<String, DiscordError> {
    api_url
        .trim()
        .trim_end_matches('/')
        .strip_suffix("/api/v10")
        .map(str::to_string)
        .ok_or_else(|| DiscordError::ApiUrl(api_url.to_string()))
}

fn start_error(step: &'static str, source: RestError) -> DiscordError {
    match source {
        RestError::Refused { status: 401, .. } => DiscordError::Unauthorized,
        source => DiscordError::Start { step, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serenity_gets_the_api_url_without_its_version_path() {
        assert_eq!(
            serenity_base("http://127.0.0.1:9/api/v10/").unwrap(),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            serenity_base("https://discord.com/api/v10").unwrap(),
            "https://discord.com"
        );
        assert!(serenity_base("https://discord.com/api/v9").is_err());
    }
}
