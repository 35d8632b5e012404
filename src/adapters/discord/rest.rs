//! The Discord REST calls soloist makes, over reqwest, with 429s handled the
//! way Discord asks: a route's 429 comes back as [`RestError::RateLimited`]
//! for the caller (the outbox holds that channel back), and a global one
//! also pauses every bot request until it lapses.
//!
//! Interaction tokens travel in URL paths, so errors drop the URL and logs
//! name the route, never the path; the bot token is a sensitive header.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::outbox::DeliveryError;

/// Why a call failed, and so what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("rate limited by Discord for {retry_after:?} (global: {global})")]
    RateLimited { retry_after: Duration, global: bool },
    #[error("Discord could not be reached or failed: {0}")]
    Transient(String),
    #[error("Discord refused the request (HTTP {status}, code {code}): {message}")]
    Refused {
        status: u16,
        code: i64,
        message: String,
    },
}

impl RestError {
    pub fn into_delivery(self) -> DeliveryError {
        match self {
            RestError::RateLimited { retry_after, .. } => DeliveryError::RetryAfter(retry_after),
            RestError::Transient(reason) => DeliveryError::Transient(reason),
            refused @ RestError::Refused { .. } => DeliveryError::Permanent(refused.to_string()),
        }
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, RestError::Refused { .. })
    }
}

/// A file sent with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub mime: &'static str,
    pub bytes: Vec<u8>,
}

/// A message body: the JSON payload and the files it names in its
/// `attachments`.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub payload: Value,
    pub files: Vec<Attachment>,
}

impl Body {
    pub fn json(payload: Value) -> Self {
        Body {
            payload,
            files: Vec::new(),
        }
    }
}

/// An interaction's token: valid 15 minutes, and as good as a password for
/// answering it, so it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct InteractionToken(pub String);

impl std::fmt::Debug for InteractionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[interaction token]")
    }
}

pub struct Rest {
    client: reqwest::Client,
    base: String,
    authorization: HeaderValue,
    /// Set by a global 429: no bot request leaves before then.
    paused_until: Mutex<Option<Instant>>,
    application_id: OnceLock<String>,
}

/// Who a call is made as: the bot (token header, global limit) or an
/// interaction's webhook (its token is in the path; no global limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Bot,
    Interaction,
}

impl Rest {
    /// A client for the API at `api_url` (e.g. `https://discord.com/api/v10`).
    pub fn new(api_url: &str, token: &str) -> Result<Rest, String> {
        let token = token.trim();
        let token = if token.starts_with("Bot ") {
            token.to_string()
        } else {
            format!("Bot {token}")
        };
        let mut authorization = HeaderValue::from_str(&token)
            .map_err(|_| "the Discord token has characters a header cannot carry".to_string())?;
        authorization.set_sensitive(true);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!(
                "DiscordBot (soloist, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Rest {
            client,
            base: api_url.trim_end_matches('/').to_string(),
            authorization,
            paused_until: Mutex::new(None),
            application_id: OnceLock::new(),
        })
    }

    /// The bot's application id (asked once; slash commands and
    /// interaction webhooks need it).
    pub async fn application_id(&self) -> Result<String, RestError> {
        if let Some(id) = self.application_id.get() {
            return Ok(id.clone());
        }
        let app = self
            .call(
                Method::GET,
                "/oauth2/applications/@me",
                None,
                Caller::Bot,
                "application",
            )
            .await?;
        let id = string_id(&app["id"]).ok_or_else(|| RestError::Transient("no id".into()))?;
        Ok(self.application_id.get_or_init(|| id).clone())
    }

    /// The bot's own user id (mentions of it address the bot).
    pub async fn bot_user_id(&self) -> Result<u64, RestError> {
        let me = self
            .call(Method::GET, "/users/@me", None, Caller::Bot, "current user")
            .await?;
        string_id(&me["id"])
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| RestError::Transient("/users/@me gave no id".into()))
    }

    /// The gateway URL from `/gateway/bot`.
    pub async fn gateway_url(&self) -> Result<String, RestError> {
        let answer = self
            .call(Method::GET, "/gateway/bot", None, Caller::Bot, "gateway")
            .await?;
        answer["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| RestError::Transient("/gateway/bot gave no url".into()))
    }

    /// Replaces the application's slash commands, in one guild or globally.
    pub async fn set_commands(
        &self,
        guild_id: Option<&str>,
        commands: Value,
    ) -> Result<(), RestError> {
        let app = self.application_id().await?;
        let path = match guild_id {
            Some(guild) => format!("/applications/{app}/guilds/{guild}/commands"),
            None => format!("/applications/{app}/commands"),
        };
        self.send_json(Method::PUT, &path, commands, Caller::Bot, "commands")
            .await
    }

    /// The DM channel with `user_id` (`POST /users/@me/channels`; Discord
    /// returns the existing one when there is one): messages the bot
    /// starts itself, like the digest, go there.
    pub async fn dm_channel(&self, user_id: &str) -> Result<String, RestError> {
        let body = Body::json(json!({ "recipient_id": user_id }));
        let channel = self
            .call(
                Method::POST,
                "/users/@me/channels",
                Some(body),
                Caller::Bot,
                "create DM",
            )
            .await?;
        string_id(&channel["id"])
            .ok_or_else(|| RestError::Transient("the DM channel came without an id".into()))
    }

    /// Posts a message in a channel; returns its id.
    pub async fn create_message(&self, channel: &str, body: Body) -> Result<String, RestError> {
        let path = format!("/channels/{channel}/messages");
        let sent = self
            .call(
                Method::POST,
                &path,
                Some(body),
                Caller::Bot,
                "create message",
            )
            .await?;
        message_id(&sent)
    }

    /// Up to `limit` (at most 100) messages of `channel` posted after the
    /// message (or any snowflake) `after`, as Discord's JSON objects:
    /// `GET /channels/{id}/messages?after=…&limit=…`. Discord gives the
    /// oldest ones after `after`, newest first.
    pub async fn messages_after(
        &self,
        channel: &str,
        after: u64,
        limit: u8,
    ) -> Result<Vec<Value>, RestError> {
        let path = format!("/channels/{channel}/messages?after={after}&limit={limit}");
        let page = self
            .call(Method::GET, &path, None, Caller::Bot, "channel history")
            .await?;
        match page {
            Value::Array(messages) => Ok(messages),
            _ => Err(RestError::Transient(
                "channel history: the answer was not a list".into(),
            )),
        }
    }

    pub async fn edit_message(
        &self,
        channel: &str,
        message: &str,
        payload: Value,
    ) -> Result<(), RestError> {
        let path = format!("/channels/{channel}/messages/{message}");
        self.send_json(Method::PATCH, &path, payload, Caller::Bot, "edit message")
            .await
    }

    /// Answers an interaction (within 3 s of its arrival).
    pub async fn respond(
        &self,
        interaction_id: &str,
        token: &InteractionToken,
        payload: Value,
    ) -> Result<(), RestError> {
        let path = format!("/interactions/{interaction_id}/{}/callback", token.0);
        self.send_json(
            Method::POST,
            &path,
            payload,
            Caller::Interaction,
            "interaction callback",
        )
        .await
    }

    /// Fills a deferred interaction response; returns the message's id.
    pub async fn edit_original(
        &self,
        token: &InteractionToken,
        body: Body,
    ) -> Result<String, RestError> {
        let path = self.webhook_path(token, "/messages/@original").await?;
        let sent = self
            .call(
                Method::PATCH,
                &path,
                Some(body),
                Caller::Interaction,
                "edit original response",
            )
            .await?;
        message_id(&sent)
    }

    pub async fn delete_original(&self, token: &InteractionToken) -> Result<(), RestError> {
        let path = self.webhook_path(token, "/messages/@original").await?;
        self.call(
            Method::DELETE,
            &path,
            None,
            Caller::Interaction,
            "delete original response",
        )
        .await
        .map(drop)
    }

    /// Sends a follow-up message to an interaction; returns its id.
    pub async fn follow_up(
        &self,
        token: &InteractionToken,
        body: Body,
    ) -> Result<String, RestError> {
        let path = self.webhook_path(token, "").await?;
        let sent = self
            .call(
                Method::POST,
                &path,
                Some(body),
                Caller::Interaction,
                "follow-up",
            )
            .await?;
        message_id(&sent)
    }

    async fn webhook_path(
        &self,
        token: &InteractionToken,
        rest: &str,
    ) -> Result<String, RestError> {
        let app = self.application_id().await?;
        Ok(format!("/webhooks/{app}/{}{rest}", token.0))
    }

    /// A JSON request whose answer does not matter.
    async fn send_json(
        &self,
        method: Method,
        path: &str,
        payload: Value,
        caller: Caller,
        route: &'static str,
    ) -> Result<(), RestError> {
        self.call(method, path, Some(Body::json(payload)), caller, route)
            .await
            .map(drop)
    }

    /// One request. `route` names it in logs and errors (paths may hold
    /// interaction tokens).
    #[tracing::instrument(skip_all, fields(route))]
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        caller: Caller,
        route: &'static str,
    ) -> Result<Value, RestError> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if caller == Caller::Bot {
            self.wait_out_global_limit().await;
            request = request.header(AUTHORIZATION, self.authorization.clone());
        }
        request = match body {
            None => request,
            Some(Body { payload, files }) if files.is_empty() => request.json(&payload),
            Some(Body { payload, files }) => request.multipart(multipart(&payload, files)?),
        };
        let response = request
            .send()
            .await
            .map_err(|e| RestError::Transient(format!("{route}: {}", e.without_url())))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let limited = self.rate_limited(response, caller).await;
            tracing::warn!(%limited, "Discord rate limit");
            return Err(limited);
        }
        let text = response
            .text()
            .await
            .map_err(|e| RestError::Transient(format!("{route}: {}", e.without_url())))?;
        if status.is_server_error() {
            return Err(RestError::Transient(format!("{route}: HTTP {status}")));
        }
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            return Err(RestError::Refused {
                status: status.as_u16(),
                code: value["code"].as_i64().unwrap_or(0),
                message: format!(
                    "{route}: {}",
                    value["message"].as_str().unwrap_or("no message")
                ),
            });
        }
        Ok(value)
    }

    /// Reads a 429 (see [`read_429`]); a global one pauses every bot
    /// request until it lapses.
    async fn rate_limited(&self, response: reqwest::Response, caller: Caller) -> RestError {
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let (retry_after, global) = read_429(&headers, &body);
        if global && caller == Caller::Bot {
            let until = Instant::now() + retry_after;
            let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            *paused = Some(paused.map_or(until, |p| p.max(until)));
        }
        RestError::RateLimited {
            retry_after,
            global,
        }
    }

    async fn wait_out_global_limit(&self) {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = until.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// How long a 429 says to wait, and whether the limit is global: the
/// body's `retry_after` (seconds, fractional), else the `Retry-After`
/// header, else a second; any value read with [`crate::retry_after`]'s cap,
/// so a hostile one (`1e20`, `inf`, `NaN`, negative) neither panics nor
/// parks the bot for good.
fn read_429(headers: &reqwest::header::HeaderMap, body: &Value) -> (Duration, bool) {
    let header = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::retry_after::parse);
    let retry_after = body["retry_after"]
        .as_f64()
        .map(crate::retry_after::from_secs)
        .or(header)
        .unwrap_or(Duration::from_secs(1));
    let global = headers.get("x-ratelimit-global").is_some()
        || headers
            .get("x-ratelimit-scope")
            .is_some_and(|v| v.as_bytes() == b"global")
        || body["global"].as_bool() == Some(true);
    (retry_after, global)
}

/// `payload_json` plus `files[n]`, as Discord takes uploads.
fn multipart(
    payload: &Value,
    files: Vec<Attachment>,
) -> Result<reqwest::multipart::Form, RestError> {
    let mut form = reqwest::multipart::Form::new().text("payload_json", payload.to_string());
    for (n, file) in files.into_iter().enumerate() {
        let part = reqwest::multipart::Part::bytes(file.bytes)
            .file_name(file.name)
            .mime_str(file.mime)
            .map_err(|e| RestError::Transient(format!("attachment: {e}")))?;
        form = form.part(format!("files[{n}]"), part);
    }
    Ok(form)
}

fn string_id(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn message_id(message: &Value) -> Result<String, RestError> {
    string_id(&message["id"])
        .ok_or_else(|| RestError::Transient("Discord returned no message id".into()))
}

/// The interaction callback that defers a slash command's answer ("is
/// thinking…"), visible to everyone or only to its sender.
pub fn defer_reply(ephemeral: bool) -> Value {
    if ephemeral {
        json!({"type": 5, "data": {"flags": EPHEMERAL}})
    } else {
        json!({"type": 5})
    }
}

/// The interaction callback that acknowledges a button press without
/// changing its message yet.
pub fn defer_update() -> Value {
    json!({"type": 6})
}

/// Message flag: only the interaction's user sees it.
pub const EPHEMERAL: u64 = 1 << 6;

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", value.parse().unwrap());
        headers
    }

    #[test]
    fn a_hostile_discord_retry_after_header_is_capped_not_a_panic() {
        let max = crate::retry_after::MAX;
        assert_eq!(
            read_429(&header("NaN"), &Value::Null).0,
            Duration::from_secs(1)
        );
        assert_eq!(read_429(&header("inf"), &Value::Null).0, max);
        assert_eq!(read_429(&header("1e20"), &Value::Null).0, max);
        assert_eq!(
            read_429(&header("-5"), &Value::Null).0,
            Duration::from_secs(1)
        );
        assert_eq!(
            read_429(&header("2"), &Value::Null).0,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_hostile_discord_retry_after_body_is_capped_not_a_panic() {
        let max = crate::retry_after::MAX;
        let body = |secs: f64| json!({"retry_after": secs, "global": false});
        assert_eq!(read_429(&HeaderMap::new(), &body(1e20)).0, max);
        assert_eq!(read_429(&HeaderMap::new(), &body(f64::MAX)).0, max);
        assert_eq!(read_429(&HeaderMap::new(), &body(-3.0)).0, Duration::ZERO);
        assert_eq!(
            read_429(&HeaderMap::new(), &body(0.25)),
            (Duration::from_millis(250), false)
        );
        let global = json!({"retry_after": 1.0, "global": true});
        assert!(read_429(&HeaderMap::new(), &global).1);
    }
}
