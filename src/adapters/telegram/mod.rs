//! Telegram: the bot in the operator's pocket.
//!
//! Inbound, updates are fetched with `getUpdates` (long polling, the
//! default) or received on a webhook, parsed ([`incoming`]) and handed to
//! the [`crate::frontdoor`], which records them in `platform_updates`; only
//! then are they confirmed to Telegram (the next `getUpdates` asks for a
//! higher offset; the webhook answers 200). The front door handles each
//! chat in order, chats in parallel; this module adds Telegram's own part
//! ("typing…", a button's toast).
//!
//! We drive `getUpdates` ourselves through teloxide's `Bot` instead of using
//! teloxide's dispatcher: its polling confirms an update (by asking for the
//! next offset) as soon as the update is handed to a handler, and keeps the
//! offset only in memory, so a crash mid-handling would lose the update.
//! Here the offset advances only after the batch is in the database.
//!
//! Outbound goes through the outbox ([`TelegramOutbox`]), paced by
//! Telegram's limits. Nothing teloxide-typed leaves this module.

mod deliver;
mod incoming;
mod outgoing;

pub use deliver::{Redactor, TelegramOutbox};
pub use outgoing::{TEXT_LIMIT, split_text};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, BotCommandScope, CallbackQueryId, ChatAction, Recipient, Update,
};
use teloxide::{ApiError, RequestError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{TelegramMode, TelegramSettings};
use crate::controller::{COMMANDS, ControllerError, NOT_OPEN, Outcome, REFUSED};
use crate::domain::{InboundContent, Platform};
use crate::frontdoor::{Arrival, Bounds, FrontDoor, Handles, Side};
use crate::outbox::RateLimits;
use crate::store::{StoreError, now_ms};
use incoming::{Extra, Incoming};

/// "typing…" shows when handling takes longer than this (a model call),
/// and is renewed while it lasts (Telegram shows it for 5 s).
const TYPING_AFTER: Duration = Duration::from_millis(300);
const TYPING_EVERY: Duration = Duration::from_secs(4);
/// Telegram restarts update ids at random after a week without updates, so
/// an older recorded id says nothing about the next offset.
const OFFSET_MAX_AGE_MS: i64 = 6 * 24 * 3600 * 1000;
/// How often old raw payloads are emptied while polling.
const FORGET_EVERY: Duration = Duration::from_secs(600);
const ALLOWED_UPDATES: [AllowedUpdate; 3] = [
    AllowedUpdate::Message,
    AllowedUpdate::EditedMessage,
    AllowedUpdate::CallbackQuery,
];

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error(
        "Telegram refused the bot token: check TELEGRAM_BOT_TOKEN (BotFather's /token shows it)"
    )]
    TokenRefused,
    #[error("Telegram refused {0}, so the bot cannot start: check the token and telegram.api_url")]
    Refused(&'static str),
    #[error("telegram.api_url '{0}' is not a URL")]
    ApiUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("webhook mode needs {0}")]
    Webhook(&'static str),
    #[error("cannot listen for the webhook on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

type TelegramDoor = FrontDoor<TelegramSide>;

/// The adapter's name in `/healthz`.
const HEALTH: &str = "telegram";

/// Runs the bot until `shutdown`: introduces it (`getMe`, `setMyCommands`),
/// delivers the outbox, handles updates left from before a restart, then
/// receives updates by polling or webhook. Reports to `handles.health`:
/// connected once `getMe` answered and while updates come in, not
/// connected (with why) before, while `getUpdates` fails, and once stopped.
pub async fn run(handles: Handles, shutdown: CancellationToken) -> Result<(), TelegramError> {
    let health = handles.health.clone();
    health
        .track(
            HEALTH,
            "starting: getMe has not answered yet",
            serve_bot(handles, shutdown),
        )
        .await
}

async fn serve_bot(handles: Handles, shutdown: CancellationToken) -> Result<(), TelegramError> {
    let settings = handles.settings.telegram.clone();
    let token = settings.token.expose().unwrap_or_default().to_string();
    let redact = Redactor::new(&token);
    let bot = build_bot(&settings, &token)?;
    let Some(me) = retrying("getMe", &redact, &shutdown, || bot.get_me().send()).await? else {
        return stopped_or_refused("getMe", &shutdown);
    };
    tracing::info!(bot = %me.username(), "connected to Telegram");
    handles.health.set(HEALTH, true);
    register_commands(&bot, &settings, &redact, &shutdown).await?;

    let limits = RateLimits::telegram().when(settings.rate_limits);
    let stop = shutdown.child_token();
    let deliverer = TelegramOutbox::new(
        bot.clone(),
        handles.store.clone(),
        redact.clone(),
        limits.per_chat_interval,
    );
    let outbox = crate::outbox::start(
        handles.store.clone(),
        Arc::new(deliverer),
        limits,
        stop.clone(),
    );
    let side = TelegramSide {
        controller: handles.controller.clone(),
        bot: bot.clone(),
        redact: redact.clone(),
    };
    let door = FrontDoor::new(
        handles.clone(),
        side,
        outbox.waker(),
        Bounds::default(),
        stop.clone(),
    );
    door.replay_unhandled(Platform::Telegram).await?;

    let receiving = async {
        match settings.mode {
            TelegramMode::Polling => {
                poll_while_leader(&bot, &door, &settings, &redact, &stop, me.id.0).await
            }
            TelegramMode::Webhook => webhook(&bot, door.clone(), &settings, &redact, &stop).await,
        }
    };
    let result = receiving.await;
    stop.cancel();
    outbox.stopped().await;
    result
}

/// A start-up call that gave no answer: fine on shutdown, otherwise the
/// bot cannot work and says why.
fn stopped_or_refused(
    what: &'static str,
    shutdown: &CancellationToken,
) -> Result<(), TelegramError> {
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        Err(TelegramError::Refused(what))
    }
}

/// The command menu, shown where the bot works: private chats, and each
/// listed group (reports there answer only in private, but the menu is
/// the same list).
async fn register_commands(
    bot: &Bot,
    settings: &TelegramSettings,
    redact: &Redactor,
    shutdown: &CancellationToken,
) -> Result<(), TelegramError> {
    let commands = COMMANDS.map(|(name, args, description)| {
        let shown = if args.is_empty() {
            description.to_string()
        } else {
            format!("{description} (/{name} {args})")
        };
        BotCommand::new(name, shown)
    });
    let mut scopes = vec![BotCommandScope::AllPrivateChats];
    for chat in &settings.allowed_chat_ids {
        if let Ok(id) = chat.parse::<i64>() {
            scopes.push(BotCommandScope::Chat {
                chat_id: Recipient::Id(ChatId(id)),
            });
        }
    }
    for scope in scopes {
        retrying("setMyCommands", redact, shutdown, || {
            bot.set_my_commands(commands.clone())
                .scope(scope.clone())
                .send()
        })
        .await?;
    }
    Ok(())
}

fn build_bot(settings: &TelegramSettings, token: &str) -> Result<Bot, TelegramError> {
    let api_url = url::Url::parse(&settings.api_url)
        .map_err(|_| TelegramError::ApiUrl(settings.api_url.clone()))?;
    // The request timeout must outlast the long poll.
    let client = teloxide::net::default_reqwest_settings()
        .timeout(Duration::from_secs(
            u64::from(settings.poll_timeout_secs) + 15,
        ))
        .build()
        .map_err(|e| TelegramError::Client(e.to_string()))?;
    Ok(Bot::with_client(token, client).set_api_url(api_url))
}

/// Telegram's part around the controller: "typing…", the button's toast,
/// and a failure said directly.
struct TelegramSide {
    controller: crate::controller::Controller,
    bot: Bot,
    redact: Redactor,
}

impl Side for TelegramSide {
    type Extra = Extra;

    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    /// "typing…" for text from someone who may act here (the owner
    /// included), from `TYPING_AFTER` on.
    fn working(&self, arrival: &Arrival<Extra>) -> Option<JoinHandle<()>> {
        let inbound = &arrival.inbound;
        let is_text = matches!(inbound.content, InboundContent::Text(_));
        if !is_text || !self.controller.is_allowed(inbound) {
            return None;
        }
        let chat = ChatId(inbound.chat.chat_id.parse().ok()?);
        let bot = self.bot.clone();
        Some(tokio::spawn(async move {
            tokio::time::sleep(TYPING_AFTER).await;
            loop {
                let _ = bot.send_chat_action(chat, ChatAction::Typing).await;
                tokio::time::sleep(TYPING_EVERY).await;
            }
        }))
    }

    /// Stops the button's spinner with a toast. Best effort: a query older
    /// than Telegram keeps it cannot be answered any more.
    async fn answered(&self, arrival: &Arrival<Extra>, result: &Result<Outcome, ControllerError>) {
        let Some(query_id) = &arrival.extra.query_id else {
            return;
        };
        let toast = toast(result);
        let mut request = self
            .bot
            .answer_callback_query(CallbackQueryId(query_id.clone()));
        if !toast.is_empty() {
            request = request.text(toast);
        }
        if let Err(error) = request.await {
            tracing::warn!(error = %self.redact.error(&error), "could not answer a button press");
        }
    }

    async fn tell(&self, arrival: &Arrival<Extra>, text: &str) {
        let Ok(chat) = arrival.inbound.chat.chat_id.parse::<i64>() else {
            return;
        };
        if let Err(error) = self.bot.send_message(ChatId(chat), text).await {
            tracing::warn!(error = %self.redact.error(&error), "could not report the failure");
        }
    }
}

/// The toast a button press gets.
fn toast(result: &Result<Outcome, ControllerError>) -> String {
    match result {
        Ok(Outcome::Decided(decision)) => format!("{}.", decision.past_tense()),
        Ok(Outcome::NotOpen) => NOT_OPEN.into(),
        Ok(Outcome::Refused) => REFUSED.into(),
        Ok(Outcome::Duplicate) => "Already done.".into(),
        Ok(Outcome::Done) => String::new(),
        Err(_) => "Something went wrong on my side; see the chat.".into(),
    }
}

/// Parses `updates` and hands them to the front door (recorded, then
/// queued to their chats). When this returns Ok they are durable and
/// Telegram may be told they arrived.
async fn accept(door: &TelegramDoor, updates: &[Update]) -> Result<(), StoreError> {
    let arrivals = updates
        .iter()
        .filter_map(Incoming::from_update)
        .map(Incoming::into_arrival)
        .collect();
    door.accept(Platform::Telegram, arrivals).await
}

/// Polls while this process holds the bot's polling lease: with several
/// `soloist run` on one database exactly one polls (two pollers would take
/// each other's updates), and when it dies another takes over within
/// seconds and continues from the offset recorded in `platform_updates`
/// (the highest update id stored: every accepted update is recorded
/// before its offset is confirmed). Webhook mode needs no lease: Telegram
/// posts each update once, to whichever process the proxy picks.
async fn poll_while_leader(
    bot: &Bot,
    door: &TelegramDoor,
    settings: &TelegramSettings,
    redact: &Redactor,
    stop: &CancellationToken,
    bot_id: u64,
) -> Result<(), TelegramError> {
    let store = door.handles().store.clone();
    let lease = format!("telegram:poll:{bot_id}");
    crate::coordination::while_leader(&store, &lease, stop, |held| async move {
        poll(bot, door, settings, redact, &held).await
    })
    .await
}

/// Long polling. The offset sent with each `getUpdates` confirms the
/// previous batch, so it advances only once that batch is recorded.
async fn poll(
    bot: &Bot,
    door: &TelegramDoor,
    settings: &TelegramSettings,
    redact: &Redactor,
    shutdown: &CancellationToken,
) -> Result<(), TelegramError> {
    // A webhook left set makes getUpdates fail.
    retrying("deleteWebhook", redact, shutdown, || {
        bot.delete_webhook().send()
    })
    .await?;
    let health = &door.handles().health;
    let mut forgotten_at: Option<tokio::time::Instant> = None;
    let Some(mut offset) = stored_offset(door, shutdown).await else {
        return Ok(());
    };
    let mut backoff = Backoff::default();
    loop {
        if forgotten_at.is_none_or(|at| at.elapsed() >= FORGET_EVERY) {
            forgotten_at = Some(tokio::time::Instant::now());
            let keep = settings.keep_payload_hours;
            if let Err(error) = door.forget_old_payloads(Platform::Telegram, keep).await {
                tracing::warn!(error = ?error, "could not forget old update payloads; will try again");
            }
        }
        let mut request = bot
            .get_updates()
            .timeout(settings.poll_timeout_secs)
            .allowed_updates(ALLOWED_UPDATES);
        if let Some(offset) = offset.and_then(|o| i32::try_from(o).ok()) {
            request = request.offset(offset);
        }
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = request.send() => result,
        };
        let updates = match result {
            Ok(updates) => updates,
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                return Err(TelegramError::TokenRefused);
            }
            Err(RequestError::RetryAfter(wait)) => {
                if !pause(wait.duration(), shutdown).await {
                    return Ok(());
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(error = %redact.error(&error), "getUpdates failed; retrying");
                health.down(HEALTH, "getUpdates fails; retrying");
                if !pause(backoff.next(), shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        backoff = Backoff::default();
        health.set(HEALTH, true);
        let Some(last) = updates.iter().map(|u| i64::from(u.id.0)).max() else {
            continue;
        };
        let mut failures = 0;
        while let Err(error) = accept(door, &updates).await {
            // One line per outage, not one per attempt.
            if failures == 0 {
                tracing::error!(error = ?error, "cannot record updates; Telegram keeps them until this succeeds");
            }
            failures += 1;
            if !pause(backoff.next(), shutdown).await {
                return Ok(());
            }
        }
        if failures > 0 {
            tracing::info!(attempts = failures, "updates recorded again");
        }
        offset = Some(last + 1);
    }
}

/// The offset to poll from: one past the highest update id recorded
/// (recent enough to mean something). Retried while the database is away;
/// None on shutdown.
async fn stored_offset(door: &TelegramDoor, shutdown: &CancellationToken) -> Option<Option<i64>> {
    let store = &door.handles().store;
    let mut backoff = Backoff::default();
    let mut logged = false;
    loop {
        let since = now_ms() - OFFSET_MAX_AGE_MS;
        let found = match store.prune_updates(Platform::Telegram, since).await {
            Ok(_) => store.last_update_id(Platform::Telegram, since).await,
            Err(error) => Err(error),
        };
        match found {
            Ok(last) => return Some(last.map(|id| id + 1)),
            Err(error) if !logged => {
                tracing::error!(error = ?error, "cannot read the stored polling offset; retrying");
                logged = true;
            }
            Err(_) => {}
        }
        if !pause(backoff.next(), shutdown).await {
            return None;
        }
    }
}

#[derive(Clone)]
struct WebhookState {
    door: Arc<TelegramDoor>,
    secret: String,
}

/// Webhook mode: Telegram posts each update to `webhook_url` (a reverse
/// proxy forwards it here); the answer is 200 only once it is recorded, so
/// Telegram retries what could not be. The route (the URL's path) is
/// mounted on `soloist run`'s HTTP server when `http.listen` is set;
/// otherwise it gets its own listener on `telegram.webhook_listen`, an
/// alias kept for one release.
async fn webhook(
    bot: &Bot,
    door: Arc<TelegramDoor>,
    settings: &TelegramSettings,
    redact: &Redactor,
    shutdown: &CancellationToken,
) -> Result<(), TelegramError> {
    let secret = settings
        .webhook_secret
        .expose()
        .filter(|s| {
            s.len() <= 256
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .ok_or(TelegramError::Webhook(
            "telegram.webhook_secret (SOLOIST__TELEGRAM__WEBHOOK_SECRET): 1 to 256 of A-Z, a-z, 0-9, _ and -",
        ))?
        .to_string();
    let url = url::Url::parse(&settings.webhook_url).map_err(|_| {
        TelegramError::Webhook(
            "telegram.webhook_url: the public https URL Telegram posts updates to",
        )
    })?;
    let handles = door.handles().clone();
    let shared = !handles.settings.http.listen.trim().is_empty();
    let own_listener = if shared {
        None
    } else {
        tracing::warn!(
            address = %settings.webhook_listen,
            "telegram.webhook_listen is deprecated and goes in the next release: set http.listen and the webhook is served there"
        );
        Some(
            tokio::net::TcpListener::bind(&settings.webhook_listen)
                .await
                .map_err(|source| TelegramError::Listen {
                    address: settings.webhook_listen.clone(),
                    source,
                })?,
        )
    };
    let state = WebhookState { door, secret };
    let path = url.path().to_string();
    if shared {
        // Mounted before setWebhook, so Telegram's first post finds it.
        let hook_state = state.clone();
        handles.hooks.mount(
            &path,
            Arc::new(move |headers, body| {
                Box::pin(receive(State(hook_state.clone()), headers, body))
            }),
        );
    }
    let set = retrying("setWebhook", redact, shutdown, || {
        bot.set_webhook(url.clone())
            .secret_token(state.secret.clone())
            .allowed_updates(ALLOWED_UPDATES)
            .send()
    })
    .await;
    let served = match (set, own_listener) {
        (Err(error), _) => Err(error),
        (Ok(_), None) => {
            tracing::info!(%path, "the Telegram webhook is served on http.listen");
            handles.health.set(HEALTH, true);
            shutdown.cancelled().await;
            Ok(())
        }
        (Ok(_), Some(listener)) => {
            handles.health.set(HEALTH, true);
            let router = axum::Router::new()
                .route(&path, axum::routing::post(receive))
                .with_state(state);
            let stop = shutdown.clone();
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .map_err(|source| TelegramError::Listen {
                    address: settings.webhook_listen.clone(),
                    source,
                })
        }
    };
    if shared {
        handles.hooks.unmount(&path);
    }
    served
}

async fn receive(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let given = headers
        .get("x-telegram-bot-api-secret-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(given, state.secret.as_bytes()) {
        tracing::warn!("a webhook request without the secret token was refused");
        return StatusCode::UNAUTHORIZED;
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(error) => {
            // Telegram would resend it forever; it will not parse better.
            tracing::warn!(%error, "an unreadable webhook update was dropped");
            return StatusCode::OK;
        }
    };
    match accept(&state.door, std::slice::from_ref(&update)).await {
        Ok(()) => StatusCode::OK,
        Err(error) => {
            tracing::error!(error = ?error, "cannot record a webhook update; Telegram will resend it");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// Compares in time independent of where the first difference is.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Calls the Bot API until it answers: network trouble and server errors
/// are retried with backoff, a refused token stops the bot, and any other
/// refusal is logged and skipped (None, as on shutdown).
async fn retrying<T, Fut>(
    what: &str,
    redact: &Redactor,
    shutdown: &CancellationToken,
    mut call: impl FnMut() -> Fut,
) -> Result<Option<T>, TelegramError>
where
    Fut: Future<Output = Result<T, RequestError>>,
{
    let mut backoff = Backoff::default();
    loop {
        let wait = match call().await {
            Ok(value) => return Ok(Some(value)),
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                return Err(TelegramError::TokenRefused);
            }
            Err(RequestError::RetryAfter(wait)) => wait.duration(),
            Err(error) => match deliver::classify(error, redact) {
                crate::outbox::DeliveryError::Permanent(reason) => {
                    tracing::error!(%reason, "Telegram refused {what}; going on without it");
                    return Ok(None);
                }
                other => {
                    tracing::warn!(error = %other, "{what} failed; retrying");
                    backoff.next()
                }
            },
        };
        if !pause(wait, shutdown).await {
            return Ok(None);
        }
    }
}

/// Sleeps unless shut down first; false when shut down.
async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// 0.5 s doubling to 30 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = Duration::from_millis(500 * 2u64.pow(self.failures.min(6)))
            .min(Duration::from_secs(30));
        self.failures += 1;
        wait
    }
}
