//! The outbox's Discord side: each message goes where
//! [`OpenInteractions::route`] says — a deferred response, an ephemeral
//! follow-up, an edit of the offers it closes, or a channel message — and
//! falls back to a channel message when Discord no longer takes the
//! interaction's answer.

use std::sync::Arc;

use super::interactions::{OpenInteractions, Route};
use super::render::{closed_offer, render};
use super::rest::{InteractionToken, Rest, RestError};
use crate::domain::{Outbound, Platform};
use crate::outbox::{Deliver, DeliveryError, Progress};
use crate::store::{OutboxMessage, Store};

pub struct DiscordDelivery {
    rest: Arc<Rest>,
    open: Arc<OpenInteractions>,
    store: Store,
}

#[async_trait::async_trait]
impl Deliver for DiscordDelivery {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    async fn deliver(
        &self,
        message: &OutboxMessage,
        offer_ids: &[String],
        _progress: &Progress,
    ) -> Result<Option<String>, DeliveryError> {
        // One Discord message per row (a long text is attached whole), so
        // there are no parts to track.
        // A run's message answers the update that started the run.
        let started_by = match message.run_id {
            Some(run) => self
                .store
                .run_origin(Platform::Discord, run)
                .await
                .map_err(|e| DeliveryError::Transient(e.to_string()))?,
            None => None,
        };
        self.send(
            &message.chat.chat_id,
            &message.message,
            started_by.as_deref(),
            offer_ids,
        )
        .await
        .map(Some)
        .map_err(RestError::into_delivery)
    }
}

impl DiscordDelivery {
    pub fn new(rest: Arc<Rest>, open: Arc<OpenInteractions>, store: Store) -> Self {
        DiscordDelivery { rest, open, store }
    }

    /// Sends one message to `channel`; returns the id of the Discord
    /// message that shows it.
    pub async fn send(
        &self,
        channel: &str,
        message: &Outbound,
        started_by: Option<&str>,
        offer_ids: &[String],
    ) -> Result<String, RestError> {
        match self
            .open
            .route(channel, message, started_by, !offer_ids.is_empty())
        {
            Route::Channel => self.post(channel, message).await,
            Route::CloseOffers => self.close_offers(channel, message, offer_ids).await,
            Route::Original { update_key, token } => {
                let sent = self
                    .rest
                    .edit_original(&token, render(message, false))
                    .await;
                self.settle(channel, &update_key, sent, message).await
            }
            Route::Ephemeral {
                update_key,
                token,
                delete_original,
            } => {
                if delete_original {
                    self.delete_original(&token).await?;
                }
                let sent = self.rest.follow_up(&token, render(message, true)).await;
                self.settle(channel, &update_key, sent, message).await
            }
        }
    }

    /// An interaction answered is closed; one Discord refuses (expired,
    /// unknown) is closed too, and the message goes to the channel instead.
    async fn settle(
        &self,
        channel: &str,
        update_key: &str,
        sent: Result<String, RestError>,
        message: &Outbound,
    ) -> Result<String, RestError> {
        match sent {
            Ok(id) => {
                self.open.close(channel, update_key);
                Ok(id)
            }
            Err(error) if error.is_refusal() => {
                tracing::warn!(%error, "Discord no longer takes this interaction's answer; posting in the channel");
                self.open.close(channel, update_key);
                self.post(channel, message).await
            }
            Err(error) => Err(error),
        }
    }

    async fn delete_original(&self, token: &InteractionToken) -> Result<(), RestError> {
        match self.rest.delete_original(token).await {
            Err(error) if !error.is_refusal() => Err(error),
            _ => Ok(()),
        }
    }

    async fn post(&self, channel: &str, message: &Outbound) -> Result<String, RestError> {
        self.rest
            .create_message(channel, render(message, false))
            .await
    }

    /// Edits every offer of the approval in this channel to show the
    /// decision with its buttons disabled; when none can be edited (deleted
    /// meanwhile), says it in a new message.
    async fn close_offers(
        &self,
        channel: &str,
        message: &Outbound,
        offer_ids: &[String],
    ) -> Result<String, RestError> {
        let edit = closed_offer(&message.text);
        let mut edited = None;
        for id in offer_ids {
            match self.rest.edit_message(channel, id, edit.clone()).await {
                Ok(()) => edited = edited.or(Some(id.clone())),
                Err(error) if error.is_refusal() => {
                    tracing::warn!(%error, "an approval offer could not be edited");
                }
                Err(error) => return Err(error),
            }
        }
        match edited {
            Some(id) => Ok(id),
            None => self.post(channel, message).await,
        }
    }
}
