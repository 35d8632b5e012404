//! Telegram: the bot in the operator's pocket.
//!
//! Inbound, updates are fetched with `getUpdates` (long polling, the
//! default) or received on a webhook, recorded in `platform_updates`, and
//! only then confirmed to Telegram (the next `getUpdates` asks for a higher
//! offset; the webhook answers 200). Each chat's updates are then handled
//! in order, chats in parallel, through the [`Controller`]; a restart
//! handles what was recorded but not finished, and the controller drops
//! what it already handled.
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
mod lanes;
mod outgoing;

pub use deliver::{Redactor, TelegramOutbox};
pub use outgoing::{TEXT_LIMIT, split_text};

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use teloxide::prelude::*;
use teloxide::types::{AllowedUpdate, BotCommand, CallbackQueryId, ChatAction, Update};
use teloxide::{ApiError, RequestError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{TelegramMode, TelegramSettings};
use crate::controller::{COMMANDS, ControllerError, NOT_OPEN, Outcome, REFUSED};
use crate::domain::Platform;
use crate::outbox::RateLimits;
use crate::runtime::Service;
use crate::store::{RecordedUpdate, Store, StoreError, now_ms};
use incoming::{Incoming, IncomingKind};
use lanes::Lanes;

/// "typing…" shows when handling takes longer than this (a model call),
/// and is renewed while it lasts (Telegram shows it for 5 s).
const TYPING_AFTER: Duration = Duration::from_millis(300);
const TYPING_EVERY: Duration = Duration::from_secs(4);
/// Telegram restarts update ids at random after a week without updates, so
/// an older recorded id says nothing about the next offset.
const OFFSET_MAX_AGE_MS: i64 = 6 * 24 * 3600 * 1000;
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

/// The Telegram service for `soloist run`.
pub fn service(app: App, shutdown: CancellationToken) -> Service {
    Box::pin(async move {
        run(app, shutdown)
            .await
            .map_err(|error| format!("telegram: {}", crate::doctor::error_chain(&error)))
    })
}

/// Runs the bot until `shutdown`: introduces it (`getMe`, `setMyCommands`),
/// delivers the outbox, handles updates left from before a restart, then
/// receives updates by polling or webhook.
pub async fn run(app: App, shutdown: CancellationToken) -> Result<(), TelegramError> {
    let settings = app.settings.telegram.clone();
    let token = settings.token.expose().unwrap_or_default().to_string();
    let redact = Redactor::new(&token);
    let bot = build_bot(&settings, &token)?;
    let Some(me) = retrying("getMe", &redact, &shutdown, || bot.get_me().send()).await? else {
        return Ok(());
    };
    tracing::info!(bot = %me.username(), "connected to Telegram");
    let commands = COMMANDS.map(|(name, args, description)| {
        let shown = if args.is_empty() {
            description.to_string()
        } else {
            format!("{description} (/{name} {args})")
        };
        BotCommand::new(name, shown)
    });
    retrying("setMyCommands", &redact, &shutdown, || {
        bot.set_my_commands(commands.clone()).send()
    })
    .await?;

    let limits = RateLimits::telegram().when(settings.rate_limits);
    let stop = shutdown.child_token();
    let deliverer = TelegramOutbox::new(
        bot.clone(),
        app.store.clone(),
        redact.clone(),
        limits.per_chat_interval,
    );
    let outbox = crate::outbox::start(app.store.clone(), Arc::new(deliverer), limits, stop.clone());
    let handler = Arc::new(Handler {
        wake: outbox.waker(),
        app: app.clone(),
        bot: bot.clone(),
        redact: redact.clone(),
    });
    let lanes = Lanes::new(
        move |incoming: Incoming| {
            let handler = handler.clone();
            async move { handler.handle(incoming).await }
        },
        stop.clone(),
    );
    let intake = Arc::new(Intake {
        store: app.store.clone(),
        lanes,
    });
    intake.replay_unhandled().await?;

    let receiving = async {
        match settings.mode {
            TelegramMode::Polling => poll(&bot, &intake, &settings, &redact, &stop).await,
            TelegramMode::Webhook => webhook(&bot, intake.clone(), &settings, &redact, &stop).await,
        }
    };
    let result = receiving.await;
    stop.cancel();
    outbox.stopped().await;
    result
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

/// Handles one recorded update: to the controller, "typing…" while it
/// works, the button's toast, then marked handled.
struct Handler {
    app: App,
    bot: Bot,
    redact: Redactor,
    wake: Arc<Notify>,
}

impl Handler {
    #[tracing::instrument(skip_all, fields(update = incoming.update_id, chat = incoming.chat_id))]
    async fn handle(&self, incoming: Incoming) {
        let inbound = incoming.to_inbound();
        let typing = self.typing(&incoming);
        let result = self.app.controller.handle(&inbound).await;
        if let Some(typing) = typing {
            typing.abort();
        }
        self.wake.notify_one();
        if let Some(query_id) = incoming.query_id() {
            self.answer(query_id, &toast(&result)).await;
        }
        if let Err(error) = &result {
            tracing::error!(error = ?error, "handling a Telegram update failed");
            // The outbox may be what failed: say it directly.
            let sent = self
                .bot
                .send_message(ChatId(incoming.chat_id), error.user_message())
                .await;
            if let Err(error) = sent {
                tracing::warn!(error = %self.redact.error(&error), "could not report the failure");
            }
        }
        let marked = self
            .app
            .store
            .mark_update_handled(Platform::Telegram, incoming.update_id)
            .await;
        if let Err(error) = marked {
            tracing::error!(error = ?error, "could not mark an update handled; a restart handles it again (the controller drops it)");
        }
    }

    /// "typing…" for text from an allowed user, from `TYPING_AFTER` on.
    fn typing(&self, incoming: &Incoming) -> Option<tokio::task::JoinHandle<()>> {
        let allowed = &self.app.settings.telegram.allowed_user_ids;
        let is_text = matches!(incoming.kind, IncomingKind::Text { .. });
        if !is_text || !allowed.contains(&incoming.user_id.to_string()) {
            return None;
        }
        let bot = self.bot.clone();
        let chat = ChatId(incoming.chat_id);
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
    async fn answer(&self, query_id: &str, toast: &str) {
        let mut request = self
            .bot
            .answer_callback_query(CallbackQueryId(query_id.to_string()));
        if !toast.is_empty() {
            request = request.text(toast);
        }
        if let Err(error) = request.await {
            tracing::warn!(error = %self.redact.error(&error), "could not answer a button press");
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

/// Where updates come in: recorded first, then queued to their chat.
struct Intake {
    store: Store,
    lanes: Arc<Lanes<Incoming>>,
}

impl Intake {
    /// Records `updates` and queues the ones not seen before. When this
    /// returns Ok they are durable and Telegram may be told they arrived.
    async fn accept(&self, updates: &[Update]) -> Result<(), StoreError> {
        let incoming: Vec<Incoming> = updates.iter().filter_map(Incoming::from_update).collect();
        let records: Vec<RecordedUpdate> = incoming
            .iter()
            .map(|i| RecordedUpdate {
                update_id: i.update_id,
                chat_id: i.chat_id.to_string(),
                payload: serde_json::to_string(i).expect("an update serializes"),
            })
            .collect();
        let fresh: HashSet<i64> = self
            .store
            .record_updates(Platform::Telegram, &records)
            .await?
            .into_iter()
            .map(|r| r.update_id)
            .collect();
        for incoming in incoming {
            if fresh.contains(&incoming.update_id) {
                self.lanes.push(incoming.chat_id, incoming);
            } else {
                tracing::debug!(update = incoming.update_id, "redelivered update dropped");
            }
        }
        Ok(())
    }

    /// Queues updates recorded before a restart but never handled.
    async fn replay_unhandled(&self) -> Result<(), StoreError> {
        for record in self.store.unhandled_updates(Platform::Telegram).await? {
            match serde_json::from_str::<Incoming>(&record.payload) {
                Ok(incoming) => self.lanes.push(incoming.chat_id, incoming),
                Err(error) => {
                    tracing::error!(update = record.update_id, %error, "an unreadable recorded update is skipped");
                    self.store
                        .mark_update_handled(Platform::Telegram, record.update_id)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Long polling. The offset sent with each `getUpdates` confirms the
/// previous batch, so it advances only once that batch is recorded.
async fn poll(
    bot: &Bot,
    intake: &Intake,
    settings: &TelegramSettings,
    redact: &Redactor,
    shutdown: &CancellationToken,
) -> Result<(), TelegramError> {
    // A webhook left set makes getUpdates fail.
    retrying("deleteWebhook", redact, shutdown, || {
        bot.delete_webhook().send()
    })
    .await?;
    let store = &intake.store;
    store
        .prune_updates(Platform::Telegram, now_ms() - OFFSET_MAX_AGE_MS)
        .await?;
    let mut offset = store
        .last_update_id(Platform::Telegram, now_ms() - OFFSET_MAX_AGE_MS)
        .await?
        .map(|id| id + 1);
    let mut backoff = Backoff::default();
    loop {
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
                if !pause(backoff.next(), shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        backoff = Backoff::default();
        let Some(last) = updates.iter().map(|u| i64::from(u.id.0)).max() else {
            continue;
        };
        while let Err(error) = intake.accept(&updates).await {
            tracing::error!(error = ?error, "cannot record updates; Telegram keeps them until this succeeds");
            if !pause(backoff.next(), shutdown).await {
                return Ok(());
            }
        }
        offset = Some(last + 1);
    }
}

#[derive(Clone)]
struct WebhookState {
    intake: Arc<Intake>,
    secret: String,
}

/// Webhook mode: Telegram posts each update to `webhook_url` (a reverse
/// proxy forwards it here); the answer is 200 only once it is recorded, so
/// Telegram retries what could not be.
async fn webhook(
    bot: &Bot,
    intake: Arc<Intake>,
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
    let listener = tokio::net::TcpListener::bind(&settings.webhook_listen)
        .await
        .map_err(|source| TelegramError::Listen {
            address: settings.webhook_listen.clone(),
            source,
        })?;
    retrying("setWebhook", redact, shutdown, || {
        bot.set_webhook(url.clone())
            .secret_token(secret.clone())
            .allowed_updates(ALLOWED_UPDATES)
            .send()
    })
    .await?;
    let router = axum::Router::new()
        .route(url.path(), axum::routing::post(receive))
        .with_state(WebhookState { intake, secret });
    let stop = shutdown.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(|source| TelegramError::Listen {
            address: settings.webhook_listen.clone(),
            source,
        })
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
    match state.intake.accept(std::slice::from_ref(&update)).await {
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
