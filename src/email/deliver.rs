//! The outbox's e-mail deliverer: turns an e-mail row into an SMTP
//! transaction.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{EmailMessage, EmailSettings, Payload, TlsMode};
use crate::domain::Platform;
use crate::outbox::{Deliver, DeliveryError, Progress};
use crate::store::{OutboxMessage, Store};

/// Why e-mail cannot start (a setting is wrong); says which.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("email.from '{0}' is not an address (e.g. \"Maya <maya@example.com>\")")]
    From(String),
    #[error("email.host '{host}' cannot be used for TLS")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

/// Sends e-mail rows over SMTP.
pub struct EmailDeliverer {
    store: Store,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl EmailDeliverer {
    pub fn new(store: Store, settings: &EmailSettings) -> Result<Self, SetupError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|_| SetupError::From(settings.from.clone()))?;
        Ok(EmailDeliverer {
            store,
            transport: transport(settings)?,
            from,
        })
    }

    /// The message an e-mail row stands for, read from its payload (the
    /// dispatcher hands deliverers the chat view of a row, which has no
    /// subject or attachments).
    async fn payload(&self, id: i64) -> Result<Payload, DeliveryError> {
        let text: Option<String> = sqlx::query_scalar("SELECT payload FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(|e| DeliveryError::Transient(format!("reading the e-mail: {e}")))?;
        let text = text.ok_or_else(|| DeliveryError::Permanent("the e-mail row is gone".into()))?;
        serde_json::from_str(&text)
            .map_err(|e| DeliveryError::Permanent(format!("the e-mail row is unreadable: {e}")))
    }
}

fn transport(settings: &EmailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, SetupError> {
    let host = settings.host.trim();
    let tls_error = |source| SetupError::Tls {
        host: host.to_string(),
        source,
    };
    let mut builder = match settings.tls {
        TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(
            Tls::Required(TlsParameters::new(host.to_string()).map_err(tls_error)?),
        ),
        TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(
            Tls::Wrapper(TlsParameters::new(host.to_string()).map_err(tls_error)?),
        ),
        TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
    }
    .port(settings.port)
    .timeout(Some(Duration::from_secs(settings.timeout_secs.max(1))));
    if let Some(password) = settings.password.expose() {
        builder = builder.credentials(Credentials::new(
            settings.user.clone(),
            password.to_string(),
        ));
    }
    Ok(builder.build())
}

/// The MIME message: the text, then each attachment.
fn build(from: &Mailbox, payload: &Payload) -> Result<Message, DeliveryError> {
    let email: &EmailMessage = &payload.email;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|_| DeliveryError::Permanent(format!("'{}' is not an address", email.to)))?;
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(message_id(&payload.key, from)));
    let text = SinglePart::plain(email.text.clone());
    let built = if email.attachments.is_empty() {
        builder.singlepart(text)
    } else {
        let mut parts = MultiPart::mixed().singlepart(text);
        for file in &email.attachments {
            let content_type = ContentType::parse(&file.content_type).unwrap_or_else(|_| {
                ContentType::parse("application/octet-stream").expect("a valid type")
            });
            parts = parts.singlepart(
                lettre::message::Attachment::new(file.filename.clone())
                    .body(file.bytes.clone(), content_type),
            );
        }
        builder.multipart(parts)
    };
    built.map_err(|e| DeliveryError::Permanent(format!("cannot build the e-mail: {e}")))
}

/// A stable Message-ID per idempotency key, so a message sent twice (a crash
/// after sending, before marking) is one message to the mail client.
fn message_id(key: &str, from: &Mailbox) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{}>", from.email.domain())
}

/// What an SMTP failure means for the row: a refusal of the message or the
/// recipient (5xx) is final; everything else (no connection, 4xx, a wrong
/// password the operator will fix) is tried again.
fn classify(error: &lettre::transport::smtp::Error) -> DeliveryError {
    let auth = error
        .status()
        .is_some_and(|code| matches!(code.to_string().as_str(), "530" | "534" | "535"));
    let reason = format!("SMTP: {error}");
    if error.is_permanent() && !auth {
        DeliveryError::Permanent(reason)
    } else {
        DeliveryError::Transient(reason)
    }
}

#[async_trait::async_trait]
impl Deliver for EmailDeliverer {
    fn platform(&self) -> Platform {
        Platform::Email
    }

    #[tracing::instrument(skip_all, fields(outbox = message.id))]
    async fn deliver(
        &self,
        message: &OutboxMessage,
        _offer_ids: &[String],
        _progress: &Progress,
    ) -> Result<Option<String>, DeliveryError> {
        let payload = self.payload(message.id).await?;
        let email = build(&self.from, &payload)?;
        let response = self.transport.send(email).await.map_err(|e| classify(&e))?;
        // The server's queue id, when it gives one ("250 2.0.0 Ok: queued as X").
        Ok(response
            .message()
            .last()
            .map(|line| crate::domain::clip(line, 200)))
    }
}
