//! E-mail out, through SMTP (lettre, rustls), as one more delivery target of
//! the outbox: a message is queued with [`queue_in`] inside the transaction
//! of the change that produced it (an approved reply, an approved offer),
//! and the outbox delivers it like any chat message: claimed with a lease,
//! retried with backoff while the server is down, paced, marked once.
//!
//! The outbox row is the whole message: platform `email`, the recipient as
//! its "chat" (so messages to one person go in order), the subject, text and
//! attachments in its payload. An idempotency key per message (table
//! `email_keys`) makes a step that runs twice queue it once.
//!
//! A crash between the server accepting a message and the row being marked
//! can send it twice, as with the chat platforms; the `Message-ID` is derived
//! from the idempotency key, so a mail client shows such a pair as one.

mod deliver;

pub use deliver::EmailDeliverer;

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::domain::Platform;
use crate::outbox::{Outbox, RateLimits};
use crate::store::{Store, StoreError, Tx, now_ms};

/// `[email]` settings. Empty `host`: e-mail is off (queued messages wait).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `SOLOIST__EMAIL__PASSWORD`; never printed.
    pub password: Secret,
    /// The sender, `Name <address>` or a bare address.
    pub from: String,
    pub tls: TlsMode,
    /// Messages per second over all recipients.
    pub per_second: u32,
    pub timeout_secs: u64,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            host: String::new(),
            port: 587,
            user: String::new(),
            password: Secret::default(),
            from: String::new(),
            tls: TlsMode::Starttls,
            per_second: 2,
            timeout_secs: 30,
        }
    }
}

impl EmailSettings {
    pub fn is_configured(&self) -> bool {
        !self.host.trim().is_empty()
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (port 587); required.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a local relay or a test server.
    None,
}

/// One e-mail to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailMessage {
    pub to: String,
    pub subject: String,
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// A file sent with an e-mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("'{0}' is not an e-mail address")]
    BadAddress(String),
    #[error("could not queue the e-mail")]
    Store(#[from] StoreError),
    #[error("could not encode the e-mail")]
    Encode(#[from] serde_json::Error),
}

/// The outbox payload of an e-mail row: `text` is what a reader of the
/// outbox (or `soloist doctor`) sees; `email` is the message.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub text: String,
    pub email: EmailMessage,
    pub key: String,
}

/// Queues `message` in the outbox inside `tx`, once per `idempotency_key`:
/// true when queued now, false when that key was queued before.
pub async fn queue_in(
    tx: &mut Tx,
    message: EmailMessage,
    idempotency_key: &str,
) -> Result<bool, EmailError> {
    let to = message.to.trim().to_string();
    if to.parse::<lettre::Address>().is_err() {
        return Err(EmailError::BadAddress(to));
    }
    let now = now_ms();
    let fresh = sqlx::query(
        "INSERT INTO email_keys (idempotency_key, recipient, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(idempotency_key)
    .bind(&to)
    .bind(now)
    .execute(&mut *tx.conn())
    .await
    .map_err(StoreError::from)?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(false);
    }
    let payload = Payload {
        text: format!("e-mail to {to}: {}", message.subject),
        email: EmailMessage {
            to: to.clone(),
            ..message
        },
        key: idempotency_key.to_string(),
    };
    sqlx::query(
        "INSERT INTO outbox (platform, chat_id, payload, status, created_at)
         VALUES ($1, $2, $3, 'pending', $4)",
    )
    .bind(Platform::Email.as_str())
    .bind(&to)
    .bind(serde_json::to_string(&payload)?)
    .bind(now)
    .execute(&mut *tx.conn())
    .await
    .map_err(StoreError::from)?;
    Ok(true)
}

/// Queues `message` in a transaction of its own.
pub async fn queue(
    store: &Store,
    message: EmailMessage,
    idempotency_key: &str,
) -> Result<bool, EmailError> {
    let mut tx = store.begin().await?;
    let queued = queue_in(&mut tx, message, idempotency_key).await?;
    tx.commit().await?;
    Ok(queued)
}

/// E-mail's pace: one message a second to one recipient, `per_second` in all.
pub fn rate_limits(settings: &EmailSettings) -> RateLimits {
    RateLimits {
        per_chat_interval: std::time::Duration::from_secs(1),
        global_per_second: settings.per_second.max(1),
        group_per_minute: u32::MAX,
    }
}

/// Starts delivering queued e-mail until `shutdown`, when `[email]` is
/// configured; None when it is not (messages stay queued until it is).
pub fn start(
    store: Store,
    settings: &EmailSettings,
    shutdown: CancellationToken,
) -> Result<Option<Outbox>, deliver::SetupError> {
    if !settings.is_configured() {
        return Ok(None);
    }
    let deliverer = Arc::new(EmailDeliverer::new(store.clone(), settings)?);
    Ok(Some(crate::outbox::start(
        store,
        deliverer,
        rate_limits(settings),
        shutdown,
    )))
}

/// `soloist run`'s e-mail service: delivers until shutdown (nothing to do
/// when `[email]` is not configured).
pub async fn service(
    store: Store,
    settings: EmailSettings,
    shutdown: CancellationToken,
) -> Result<(), String> {
    match start(store, &settings, shutdown.clone()) {
        Ok(Some(outbox)) => {
            shutdown.cancelled().await;
            outbox.stopped().await;
            Ok(())
        }
        Ok(None) => {
            shutdown.cancelled().await;
            Ok(())
        }
        Err(error) => Err(format!("e-mail: {error}")),
    }
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_prints_with_the_settings() {
        let settings = EmailSettings {
            password: Secret::new("smtp-hunter2"),
            ..EmailSettings::default()
        };
        assert!(!format!("{settings:?}").contains("smtp-hunter2"));
    }

    #[test]
    fn an_attachment_survives_the_outbox_payload_byte_for_byte() {
        let message = EmailMessage {
            to: "a@b.example".into(),
            subject: "s".into(),
            text: "t".into(),
            attachments: vec![Attachment {
                filename: "p.pdf".into(),
                content_type: "application/pdf".into(),
                bytes: vec![0, 159, 255, 10],
            }],
        };
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(
            serde_json::from_str::<EmailMessage>(&json).unwrap(),
            message
        );
    }
}
