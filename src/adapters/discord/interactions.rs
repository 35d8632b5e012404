//! Interactions still waiting for an answer, by channel, and where each
//! outbox message goes because of them.
//!
//! A slash command is deferred as it arrives ("soloist is thinking…"); the
//! next public message for its channel fills that response. A reply meant
//! for one person (a refusal, "no longer open") answers that person's own
//! interaction as an ephemeral message. Everything else is an ordinary
//! channel message. Discord accepts answers for 15 minutes; after that a
//! channel message is all there is.
//!
//! The dispatcher keeps one delivery in flight per channel, so a channel's
//! entries change one message at a time; an entry is removed only once its
//! answer went out, so a retried delivery takes the same route.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::rest::InteractionToken;
use crate::domain::{ApprovalRole, Outbound};

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
}

impl OpenInteractions {
    pub fn open(&self, channel: &str, open: Open) {
        let mut by_channel = self.by_channel.lock().unwrap();
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
        let mut by_channel = self.by_channel.lock().unwrap();
        if let Some(list) = by_channel.get_mut(channel) {
            list.retain(|o| o.update_key != update_key);
            if list.is_empty() {
                by_channel.remove(channel);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_channel.lock().unwrap().values().map(Vec::len).sum()
    }

    pub fn route(&self, channel: &str, message: &Outbound, has_offers: bool) -> Route {
        let closes = message
            .approval
            .is_some_and(|link| link.role == ApprovalRole::Closed);
        if closes && has_offers {
            return Route::CloseOffers;
        }
        let by_channel = self.by_channel.lock().unwrap();
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
                .find(|o| o.kind == OpenKind::Command { ephemeral: false })
                .map_or(Route::Channel, |o| Route::Original {
                    update_key: o.update_key.clone(),
                    token: o.token.clone(),
                }),
        }
    }
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
    fn a_public_reply_fills_the_oldest_public_deferred_command() {
        let registry = OpenInteractions::default();
        registry.open("c", open("refused", OpenKind::Command { ephemeral: true }));
        registry.open("c", open("press", OpenKind::Press));
        registry.open("c", open("draft", OpenKind::Command { ephemeral: false }));
        let route = registry.route("c", &Outbound::text("Draft…"), false);
        assert!(matches!(route, Route::Original { ref update_key, .. } if update_key == "draft"));
        registry.close("c", "draft");
        assert_eq!(
            registry.route("c", &Outbound::text("more"), false),
            Route::Channel
        );
    }

    #[test]
    fn a_private_reply_answers_only_its_own_interaction() {
        let registry = OpenInteractions::default();
        registry.open("c", open("mine", OpenKind::Command { ephemeral: false }));
        registry.open("c", open("theirs", OpenKind::Press));
        let refusal = Outbound::text("Sorry").private_to("theirs");
        assert_eq!(
            registry.route("c", &refusal, false),
            Route::Ephemeral {
                update_key: "theirs".into(),
                token: InteractionToken("token-theirs".into()),
                delete_original: false,
            }
        );
        let unknown = Outbound::text("Sorry").private_to("gone");
        assert_eq!(registry.route("c", &unknown, false), Route::Channel);
        let other_channel = Outbound::text("Sorry").private_to("theirs");
        assert_eq!(registry.route("d", &other_channel, false), Route::Channel);
    }

    #[test]
    fn a_private_reply_to_a_public_deferral_replaces_it() {
        let registry = OpenInteractions::default();
        registry.open("c", open("cmd", OpenKind::Command { ephemeral: false }));
        let route = registry.route("c", &Outbound::text("No").private_to("cmd"), false);
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
        assert_eq!(registry.route("c", &closed, true), Route::CloseOffers);
        assert!(matches!(
            registry.route("c", &closed, false),
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
            registry.route("c", &Outbound::text("late"), false),
            Route::Channel
        );
        registry.open("d", open("new", OpenKind::Press));
        assert_eq!(registry.len(), 1, "the expired one was dropped");
    }
}
