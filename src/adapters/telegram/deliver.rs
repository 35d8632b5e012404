//! The outbox's Telegram side: `sendMessage` with an inline keyboard,
//! `sendPhoto` / `sendDocument` as multipart uploads, and for a message
//! that closes an approval, `editMessageText` of each offer (its keyboard
//! goes: an edit without `reply_markup` removes it).

use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{
    InlineKeyboardButton, InlineKeyboardMarkup, InputFile, LinkPreviewOptions, MessageId,
};
use teloxide::{ApiError, RequestError};

use super::outgoing::{Part, closing_text, render};
use crate::domain::{ApprovalRole, Button, Platform};
use crate::outbox::{Deliver, DeliveryError, Progress};
use crate::store::{OutboxMessage, Store};

/// Delivers outbox rows to Telegram.
pub struct TelegramOutbox {
    bot: Bot,
    store: Store,
    redact: Redactor,
    /// Pause between the parts of one split message (Telegram's per-chat
    /// pace); zero when rate limits are off.
    part_gap: Duration,
}

impl TelegramOutbox {
    pub fn new(bot: Bot, store: Store, redact: Redactor, part_gap: Duration) -> Self {
        TelegramOutbox {
            bot,
            store,
            redact,
            part_gap,
        }
    }

    /// Sends the parts not sent yet, storing each one's progress: a retry
    /// or a restart after a crash goes on from the first part not sent.
    async fn send(
        &self,
        chat: ChatId,
        message: &OutboxMessage,
        progress: &Progress,
    ) -> Result<String, DeliveryError> {
        let parts = render(&message.message).map_err(DeliveryError::Permanent)?;
        let start = message.parts_sent;
        let mut last_id = message.last_part_id.clone().unwrap_or_default();
        for (index, part) in parts.iter().enumerate().skip(start) {
            if index > start && !self.part_gap.is_zero() {
                tokio::time::sleep(self.part_gap).await;
            }
            let is_last = index + 1 == parts.len();
            let keyboard = keyboard(&message.message.buttons).filter(|_| is_last);
            let id = self
                .send_part(chat, part, keyboard)
                .await
                .map_err(|error| classify(error, &self.redact))?;
            last_id = id.0.to_string();
            if !is_last {
                progress.part_sent(index + 1, &last_id).await?;
            }
        }
        Ok(last_id)
    }

    async fn send_part(
        &self,
        chat: ChatId,
        part: &Part,
        keyboard: Option<InlineKeyboardMarkup>,
    ) -> Result<MessageId, RequestError> {
        let sent = match part {
            Part::Text(text) => {
                let mut request = self
                    .bot
                    .send_message(chat, text)
                    .link_preview_options(no_preview());
                if let Some(keyboard) = keyboard {
                    request = request.reply_markup(keyboard);
                }
                request.await?
            }
            Part::Photo {
                file_name,
                png,
                caption,
            } => {
                let file = InputFile::memory(png.clone()).file_name(file_name.clone());
                let mut request = self.bot.send_photo(chat, file);
                if let Some(caption) = caption {
                    request = request.caption(caption);
                }
                if let Some(keyboard) = keyboard {
                    request = request.reply_markup(keyboard);
                }
                request.await?
            }
            Part::Document { file_name, text } => {
                let file =
                    InputFile::memory(text.clone().into_bytes()).file_name(file_name.clone());
                self.bot.send_document(chat, file).await?
            }
            Part::File { file_name, bytes } => {
                let file = InputFile::memory(bytes.clone()).file_name(file_name.clone());
                self.bot.send_document(chat, file).await?
            }
        };
        Ok(sent.id)
    }

    /// Edits every offer of the approval in this chat to show the decision
    /// (keyboard removed); sends the decision as a new message when there
    /// is no offer left to edit.
    async fn close(
        &self,
        chat: ChatId,
        message: &OutboxMessage,
        offer_ids: &[String],
        progress: &Progress,
    ) -> Result<String, DeliveryError> {
        let offers = match message.message.approval {
            Some(link) => self
                .store
                .offer_messages(link.id, &message.chat)
                .await
                .map_err(|e| DeliveryError::Transient(format!("reading the offers: {e}")))?,
            None => Vec::new(),
        };
        let decision = &message.message.text;
        let mut edited = None;
        for id in offer_ids {
            let Ok(message_id) = id.parse::<i32>() else {
                continue;
            };
            let text = offers
                .iter()
                .find(|(offer_id, _)| offer_id == id)
                .map(|(_, offer)| closing_text(offer, decision))
                .unwrap_or_else(|| decision.clone());
            let result = self
                .bot
                .edit_message_text(chat, MessageId(message_id), text)
                .link_preview_options(no_preview())
                .await;
            match result {
                // A retry after a crash finds the edit already made.
                Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => {
                    edited.get_or_insert_with(|| id.clone());
                }
                Err(error) => match classify(error, &self.redact) {
                    DeliveryError::Permanent(reason) => {
                        tracing::warn!(%reason, "an approval offer could not be edited");
                    }
                    retry => return Err(retry),
                },
            }
        }
        match edited {
            Some(id) => Ok(id),
            None => self.send(chat, message, progress).await,
        }
    }
}

#[async_trait::async_trait]
impl Deliver for TelegramOutbox {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    /// Group and supergroup ids are negative in the Bot API.
    fn is_group(&self, chat_id: &str) -> bool {
        chat_id.starts_with('-')
    }

    #[tracing::instrument(skip_all, fields(chat = %message.chat.chat_id, outbox = message.id))]
    async fn deliver(
        &self,
        message: &OutboxMessage,
        offer_ids: &[String],
        progress: &Progress,
    ) -> Result<Option<String>, DeliveryError> {
        let chat = message
            .chat
            .chat_id
            .parse::<i64>()
            .map(ChatId)
            .map_err(|_| DeliveryError::Permanent("not a Telegram chat id".into()))?;
        let closes = message
            .message
            .approval
            .is_some_and(|link| link.role == ApprovalRole::Closed);
        let id = if closes {
            self.close(chat, message, offer_ids, progress).await?
        } else {
            self.send(chat, message, progress).await?
        };
        Ok(Some(id))
    }
}

/// The buttons in one row, their tokens as callback data, verbatim.
fn keyboard(buttons: &[Button]) -> Option<InlineKeyboardMarkup> {
    (!buttons.is_empty()).then(|| {
        InlineKeyboardMarkup::new([buttons
            .iter()
            .map(|b| InlineKeyboardButton::callback(b.label.clone(), b.token.as_str()))
            .collect::<Vec<_>>()])
    })
}

/// Drafts often hold links; a preview of someone else's page under a draft
/// is noise, and fetching it is Telegram's business, not the operator's.
fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
}

/// What a failed request means for the outbox. Telegram gives no error
/// code through teloxide, so "Bad Request" / "Forbidden" / "Unauthorized"
/// in the description mark a refusal for good; any other unknown
/// description (a 5xx) is worth retrying.
pub fn classify(error: RequestError, redact: &Redactor) -> DeliveryError {
    match error {
        RequestError::RetryAfter(wait) => {
            DeliveryError::RetryAfter(crate::retry_after::cap(wait.duration()))
        }
        RequestError::Api(ApiError::Unknown(description))
            if !["Bad Request", "Forbidden", "Unauthorized", "Not Found"]
                .iter()
                .any(|refusal| description.starts_with(refusal)) =>
        {
            DeliveryError::Transient(redact.scrub(&description))
        }
        RequestError::Api(api) => DeliveryError::Permanent(redact.scrub(&api.to_string())),
        RequestError::MigrateToChatId(to) => DeliveryError::Permanent(format!(
            "the group became supergroup {to}; the chat id must change"
        )),
        other @ (RequestError::Network(_)
        | RequestError::InvalidJson { .. }
        | RequestError::Io(_)) => DeliveryError::Transient(redact.error(&other)),
    }
}

/// Removes the bot token from text: it is part of every Bot API URL, and
/// network errors quote the URL.
#[derive(Clone)]
pub struct Redactor {
    token: String,
}

impl Redactor {
    pub fn new(token: &str) -> Self {
        Redactor {
            token: token.to_string(),
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        if self.token.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.token, "[REDACTED]")
        }
    }

    /// An error and its causes on one line, without the token.
    pub fn error(&self, error: &dyn std::error::Error) -> String {
        self.scrub(&crate::frontdoor::error_chain(error))
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_errors_lose_the_token_their_url_carries() {
        let redact = Redactor::new("123456:AAE-secret_token");
        let text = redact.scrub(
            "error sending request for url (https://api.telegram.org/bot123456:AAE-secret_token/SendMessage)",
        );

        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("/bot[REDACTED]/SendMessage"));
    }

    #[test]
    fn a_huge_telegram_retry_after_is_capped() {
        let redact = Redactor::new("t");
        let huge = RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(u32::MAX));

        let classified = classify(huge, &redact);

        assert!(
            matches!(classified, DeliveryError::RetryAfter(wait) if wait == crate::retry_after::MAX),
            "{classified:?}"
        );
    }

    #[test]
    fn server_errors_retry_and_refusals_do_not() {
        let redact = Redactor::new("t");
        let unknown = |d: &str| RequestError::Api(ApiError::Unknown(d.into()));

        assert!(matches!(
            classify(unknown("Internal Server Error"), &redact),
            DeliveryError::Transient(_)
        ));
        assert!(matches!(
            classify(unknown("Bad Request: chat not found"), &redact),
            DeliveryError::Permanent(_)
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::BotBlocked), &redact),
            DeliveryError::Permanent(_)
        ));
    }
}
