//! Posting to and taking down from a publishing channel, over each
//! platform's HTTP API: Telegram `sendMessage` / `deleteMessage` /
//! `editMessageText`, Discord `POST` / `DELETE /channels/{id}/messages`.
//! The bot token is in Telegram's URL path, so an error never carries the
//! URL (reqwest's `without_url`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Settings;
use crate::domain::Platform;

/// What a platform call came to when it did not work.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The platform said no (a missing right, a deleted channel, a message
    /// too old to delete): trying again will not help.
    #[error("{platform} refused: {description}")]
    Refused {
        platform: &'static str,
        description: String,
    },
    /// Not reached, or a server error: may work later.
    #[error("{platform} could not be reached: {description}")]
    Unreachable {
        platform: &'static str,
        description: String,
    },
    #[error("{0} is not configured (no token)")]
    NotConfigured(&'static str),
}

impl PlatformError {
    pub fn is_refusal(&self) -> bool {
        !matches!(self, PlatformError::Unreachable { .. })
    }
}

/// The text a Telegram post keeps when it is too old to delete.
pub const RETRACTION_NOTE: &str = "This post was retracted.";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// Posts `text` in `channel`; returns the platform's message id.
pub async fn post(
    settings: &Settings,
    platform: Platform,
    channel: &str,
    text: &str,
) -> Result<String, PlatformError> {
    match platform {
        Platform::Telegram => {
            let result = telegram(
                settings,
                "sendMessage",
                json!({"chat_id": channel, "text": text}),
            )
            .await?;
            Ok(result["message_id"].to_string())
        }
        Platform::Discord => {
            let path = format!("/channels/{channel}/messages");
            let result = discord(
                settings,
                reqwest::Method::POST,
                &path,
                Some(json!({"content": text})),
            )
            .await?;
            result["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| PlatformError::Unreachable {
                    platform: "Discord",
                    description: "the answer carried no message id".into(),
                })
        }
        _ => Err(PlatformError::Refused {
            platform: "soloist",
            description: format!("cannot publish on {platform}"),
        }),
    }
}

/// Deletes a posted message.
pub async fn delete(
    settings: &Settings,
    platform: Platform,
    channel: &str,
    message_id: &str,
) -> Result<(), PlatformError> {
    match platform {
        Platform::Telegram => {
            let id: i64 = message_id.parse().unwrap_or_default();
            telegram(
                settings,
                "deleteMessage",
                json!({"chat_id": channel, "message_id": id}),
            )
            .await
            .map(|_| ())
        }
        Platform::Discord => {
            let path = format!("/channels/{channel}/messages/{message_id}");
            discord(settings, reqwest::Method::DELETE, &path, None)
                .await
                .map(|_| ())
        }
        _ => Err(PlatformError::Refused {
            platform: "soloist",
            description: format!("cannot retract on {platform}"),
        }),
    }
}

/// Telegram only: replaces a post's text (a message older than 48 hours
/// cannot be deleted by a bot, but it can still be edited).
pub async fn replace_with_note(
    settings: &Settings,
    channel: &str,
    message_id: &str,
) -> Result<(), PlatformError> {
    let id: i64 = message_id.parse().unwrap_or_default();
    telegram(
        settings,
        "editMessageText",
        json!({"chat_id": channel, "message_id": id, "text": RETRACTION_NOTE}),
    )
    .await
    .map(|_| ())
}

async fn telegram(settings: &Settings, method: &str, body: Value) -> Result<Value, PlatformError> {
    const NAME: &str = "Telegram";
    let token = settings.telegram.token.expose().unwrap_or_default();
    if token.is_empty() {
        return Err(PlatformError::NotConfigured(NAME));
    }
    let url = format!(
        "{}/bot{token}/{method}",
        settings.telegram.api_url.trim_end_matches('/')
    );
    let response = client()
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| unreachable(NAME, e))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if answer["ok"] == true {
        return Ok(answer["result"].clone());
    }
    let description = answer["description"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}"));
    if status.is_server_error() || status.as_u16() == 429 {
        Err(PlatformError::Unreachable {
            platform: NAME,
            description,
        })
    } else {
        Err(PlatformError::Refused {
            platform: NAME,
            description,
        })
    }
}

async fn discord(
    settings: &Settings,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, PlatformError> {
    const NAME: &str = "Discord";
    let token = settings.discord.token.expose().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(PlatformError::NotConfigured(NAME));
    }
    let authorization = if token.starts_with("Bot ") {
        token.to_string()
    } else {
        format!("Bot {token}")
    };
    let url = format!("{}{path}", settings.discord.api_url.trim_end_matches('/'));
    let mut request = client()
        .request(method, url)
        .header("Authorization", authorization);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| unreachable(NAME, e))?;
    let status = response.status();
    if status == reqwest::StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer);
    }
    let description = answer["message"]
        .as_str()
        .map(|m| format!("{m} (HTTP {status})"))
        .unwrap_or_else(|| format!("HTTP {status}"));
    if status.is_server_error() || status.as_u16() == 429 {
        Err(PlatformError::Unreachable {
            platform: NAME,
            description,
        })
    } else {
        Err(PlatformError::Refused {
            platform: NAME,
            description,
        })
    }
}

fn unreachable(platform: &'static str, error: reqwest::Error) -> PlatformError {
    PlatformError::Unreachable {
        platform,
        description: error.without_url().to_string(),
    }
}
