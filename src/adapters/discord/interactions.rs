//! Interactions still waiting for an answer, by channel, and where each
//! outbox message goes because of them.
//!
//! A slash command is deferred as it arrives ("soloist is thinking…"); the
//! reply to that very command fills that response: a message the
//! controller queued as its answer ([`Outbound::answers`]), or the first
//! public message of the run it started. No other message does, so one
//! person's "thinking…" never shows another person's answer. A reply meant
//! for one person (a refusal, "no longer open") answers that person's own
//! interaction as an ephemeral message. Everything else is an ordinary
//! channel message. Discord accepts answers for 15 minutes; after that a
//! channel message is all there is.
//!
//! Interactions are stored as they are acknowledged ([`Store`]), so after a
//! restart a reply still fills its deferred response while the token is
//! valid.
//!
//! The dispatcher keeps one delivery in flight per channel, so a channel's
//! entries change one message at a time; an entry is removed only once its
//! answer went out, so a retried delivery takes the same route.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::rest::InteractionToken;
use crate::domain::{ApprovalRole, Outbound, Platform};
use crate::store::{PendingInteraction, Store, StoreError, now_ms};

/// How long an interaction can be answered (Discord: 15 minutes), less a
/// margin for the request in flight.
pub const ANSWERABLE_FOR: Duration = Duration::from_secs(14 * 60);

#[derive(Debug, Clone)]
pub struct Open {
    /// The update key the interaction was handled under.
    pub update_key: String,
    pub token: InteractionToken,
    pub kind: OpenKind,
    pub opened: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenKind {
    /// A slash command whose deferred response is not filled yet.
    Command { ephemeral: bool },
    /// A button press, acknowledged; only a private reply uses it.
    Press,
}

/// Where one outbox message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A new message in the channel.
    Channel,
    /// Edit the approval offers the message closes.
    CloseOffers,
    /// Fill a slash command's deferred response.
    Original {
        update_key: String,
        token: InteractionToken,
    },
    /// An ephemeral follow-up to the sender's interaction; a public
    /// deferred response is deleted first so the answer is the only one.
    Ephemeral {
        update_key: String,
        token: InteractionToken,
        delete_original: bool,
    },
}

#[derive(Debug, Default)]
pub struct OpenInteractions {
    by_channel: Mutex<HashMap<String, Vec<Open>>>,
    /// Where interactions are kept across a restart (none in unit tests).
    store: Option<Store>,
}

impl OpenInteractions {
    /// Interactions kept in `store`, with those still answerable loaded.
    pub async fn durable(store: Store) -> Result<Self, StoreError> {
        let since = now_ms() - ANSWERABLE_FOR.as_millis() as i64;
        let pending = store.pending_interactions(Platform::Discord, since).await?;
        let open = OpenInteractions {
            by_channel: Mutex::default(),
            store: Some(store),
        };
        for row in pending {
            if let Some((channel, entry)) = from_row(row) {
                open.open(&channel, entry);
            }
        }
        Ok(open)
    }

    /// Opens an interaction and stores it; when storing fails it is still
    /// answerable until a restart.
    pub async fn remember(&self, channel: &str, entry: Open) {
        if let Some(store) = &self.store {
            let row = PendingInteraction {
                platform: Platform::Discord,
                update_key: entry.update_key.clone(),
                channel_id: channel.to_string(),
                token: entry.token.0.clone(),
                kind: kind_name(entry.kind).to_string(),
                opened_at_ms: now_ms(),
            };
            if let Err(error) = store.save_pending_interaction(&row).await {
                tracing::warn!(error = ?error, "could not store a pending interaction; a restart forgets it");
            }
        }
        self.open(channel, entry);
    }

    pub fn open(&self, channel: &str, open: Open) {
        let mut by_channel = self.by_channel();
        by_channel.retain(|_, list| {
            list.retain(|o| o.opened.elapsed() < ANSWERABLE_FOR);
            !list.is_empty()
        });
        by_channel
            .entry(channel.to_string())
            .or_default()
            .push(open);
    }

    /// Forgets an interaction once answered (or no longer answerable).
    pub fn close(&self, channel: &str, update_key: &str) {
        {
            let mut by_channel = self.by_channel();
            if let Some(list) = by_channel.get_mut(channel) {
                list.retain(|o| o.update_key != update_key);
                if list.is_empty() {
                    by_channel.remove(channel);
                }
            }
        }
        if let Some(store) = self.store.clone() {
            let key = update_key.to_string();
            // Off the delivery's path; a row left behind expires anyway.
            tokio::spawn(async move {
                if let Err(error) = store
                    .forget_pending_interaction(Platform::Discord, &key)
                    .await
                {
                    tracing::warn!(error = ?error, "could not forget an answered interaction");
                }
            });
        }
    }

    fn by_channel(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Open>>> {
        self.by_channel.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_channel().values().map(Vec::len).sum()
    }

    /// Where `message` goes; `started_by` is the key of the update that
    /// started the run the message comes from, if any.
    pub fn route(
        &self,
        channel: &str,
        message: &Outbound,
        started_by: Option<&str>,
        has_offers: bool,
    ) -> Route {
        let closes = message
            .approval
            .is_some_and(|link| link.role == ApprovalRole::Closed);
        if closes && has_offers {
            return Route::CloseOffers;
        }
        let by_channel = self.by_channel();
        let open: Vec<&Open> = by_channel
            .get(channel)
            .map(|list| {
                list.iter()
                    .filter(|o| o.opened.elapsed() < ANSWERABLE_FOR)
                    .collect()
            })
            .unwrap_or_default();
        match &message.private_to {
            Some(key) => match open.iter().find(|o| &o.update_key == key) {
                Some(o) => match o.kind {
                    OpenKind::Command { ephemeral: true } => Route::Original {
                        update_key: o.update_key.clone(),
                        token: o.token.clone(),
                    },
                    OpenKind::Command { ephemeral: false } => Route::Ephemeral {
                        update_key: o.update_key.clone(),
                        token: o.token.clone(),
                        delete_original: true,
                    },
                    OpenKind::Press => Route::Ephemeral {
                        update_key: o.update_key.clone(),
                        token: o.token.clone(),
                        delete_original: false,
                    },
                },
                None => Route::Channel,
            },
            None => open
                .iter()
                .find(|o| {
                    let answered = message.answers.as_deref().or(started_by);
                    o.kind == OpenKind::Command { ephemeral: false }
                        && answered == Some(o.update_key.as_str())
                })
                .map_or(Route::Channel, |o| Route::Original {
                    update_key: o.update_key.clone(),
                    token: o.token.clone(),
                }),
        }
    }
}

fn kind_name(kind: OpenKind) -> &'static str {
    match kind {
        OpenKind::Command { ephemeral: false } => "command",
        OpenKind::Command { ephemeral: true } => "ephemeral_command",
        OpenKind::Press => "press",
    }
}

/// A stored interaction back in memory, aged as it was.
fn from_row(row: PendingInteraction) -> Option<(String, Open)> {
    let kind = match row.kind.as_str() {
        "command" => OpenKind::Command { ephemeral: false },
        "ephemeral_command" => OpenKind::Command { ephemeral: true },
        "press" => OpenKind::Press,
        _ => return None,
    };
    let age = Duration::from_millis(u64::try_from(now_ms() - row.opened_at_ms).unwrap_or(0));
    let opened = Instant::now().checked_sub(age)?;
    Some((
        row.channel_id,
        Open {
            update_key: row.update_key,
            token: InteractionToken(row.token),
            kind,
            opened,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApprovalId;

    fn open(key: &str, kind: OpenKind) -> Open {
        Open {
            update_key: key.into(),
            token: InteractionToken(format!("token-{key}")),
            kind,
            opened: Instant::now(),
        }
    }

    #[test]
    fn a_public_reply_fills_the_deferred_command_it_answers() {
        let registry = OpenInteractions::default();
        registry.open("c", open("refused", OpenKind::Command { ephemeral: true }));
        registry.open("c", open("press", OpenKind::Press));
        registry.open("c", open("draft", OpenKind::Command { ephemeral: false }));
        let route = registry.route("c", &Outbound::text("Draft…"), Some("draft"), false);
        assert!(matches!(route, Route::Original { ref update_key, .. } if update_key == "draft"));
        registry.close("c", "draft");
        assert_eq!(
            registry.route("c", &Outbound::text("more"), Some("draft"), false),
            Route::Channel
        );
    }

    #[test]
    fn a_public_message_never_fills_another_updates_deferred_response() {
        let registry = OpenInteractions::default();
        registry.open("c", open("theirs", OpenKind::Command { ephemeral: false }));
        let mut mine = Outbound::text("Recent runs: …");
        mine.answers = Some("mine".into());

        assert_eq!(registry.route("c", &mine, None, false), Route::Channel);
        assert_eq!(
            registry.route("c", &Outbound::text("a run's news"), Some("other"), false),
            Route::Channel
        );
        assert_eq!(
            registry.route("c", &Outbound::text("unasked"), None, false),
            Route::Channel
        );
        mine.answers = Some("theirs".into());
        assert!(matches!(
            registry.route("c", &mine, None, false),
            Route::Original { .. }
        ));
    }

    #[test]
    fn a_private_reply_answers_only_its_own_interaction() {
        let registry = OpenInteractions::default();
        registry.open("c", open("mine", OpenKind::Command { ephemeral: false }));
        registry.open("c", open("theirs", OpenKind::Press));
        let refusal = Outbound::text("Sorry").private_to("theirs");
        assert_eq!(
            registry.route("c", &refusal, None, false),
            Route::Ephemeral {
                update_key: "theirs".into(),
                token: InteractionToken("token-theirs".into()),
                delete_original: false,
            }
        );
        let unknown = Outbound::text("Sorry").private_to("gone");
        assert_eq!(registry.route("c", &unknown, None, false), Route::Channel);
        let other_channel = Outbound::text("Sorry").private_to("theirs");
        assert_eq!(
            registry.route("d", &other_channel, None, false),
            Route::Channel
        );
    }

    #[test]
    fn a_private_reply_to_a_public_deferral_replaces_it() {
        let registry = OpenInteractions::default();
        registry.open("c", open("cmd", OpenKind::Command { ephemeral: false }));
        let route = registry.route("c", &Outbound::text("No").private_to("cmd"), None, false);
        assert!(matches!(
            route,
            Route::Ephemeral {
                delete_original: true,
                ..
            }
        ));
    }

    #[test]
    fn a_decision_edits_the_offers_when_there_are_any() {
        let registry = OpenInteractions::default();
        registry.open("c", open("cmd", OpenKind::Command { ephemeral: false }));
        let closed =
            Outbound::text("Approved by Maya.").linked_to(ApprovalId::new(), ApprovalRole::Closed);
        assert_eq!(registry.route("c", &closed, None, true), Route::CloseOffers);
        assert!(matches!(
            registry.route("c", &closed, Some("cmd"), false),
            Route::Original { .. }
        ));
    }

    #[test]
    fn expired_interactions_are_not_answered_and_are_pruned() {
        let registry = OpenInteractions::default();
        let mut old = open("old", OpenKind::Command { ephemeral: false });
        // The monotonic clock starts at boot: nothing to test on a machine
        // up for less than 15 minutes.
        let Some(long_ago) = Instant::now().checked_sub(ANSWERABLE_FOR + Duration::from_secs(1))
        else {
            return;
        };
        old.opened = long_ago;
        registry.open("c", old);
        assert_eq!(
            registry.route("c", &Outbound::text("late"), Some("old"), false),
            Route::Channel
        );
        registry.open("d", open("new", OpenKind::Press));
        assert_eq!(registry.len(), 1, "the expired one was dropped");
    }
}
