//! Telegram updates into what soloist acts on. No I/O: an [`Incoming`] is
//! the parse, turned into the front door's [`Arrival`] (soloist's own JSON
//! is what gets recorded, so a restart does not depend on teloxide's types
//! round-tripping).

use serde::{Deserialize, Serialize};
use teloxide::types::{Message, MessageKind, MessageOrigin, Update, UpdateKind, User};

use crate::domain::{ButtonToken, ChatKind, ChatRef, Inbound, InboundContent, Origin, Platform};
use crate::frontdoor::Arrival;

/// What a recorded Telegram update keeps besides its [`Inbound`]: the
/// callback query to answer, for a press.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
}

/// One update soloist acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    pub update_id: i64,
    pub chat_id: i64,
    pub user_id: u64,
    pub user_name: String,
    pub message_id: Option<i32>,
    /// Not a private chat (a group, a supergroup).
    #[serde(default)]
    pub group: bool,
    pub kind: IncomingKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IncomingKind {
    /// Typed text, a photo's caption, or a forwarded message's text (the
    /// request), with where a forwarded message came from (provenance,
    /// kept in the recorded update).
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forwarded_from: Option<String>,
    },
    /// A button press: the callback query to answer, and its data.
    Press { query_id: String, data: String },
    /// Something soloist cannot act on, named for the reply ("a sticker").
    Unsupported { what: String },
}

impl Incoming {
    /// What soloist makes of an update; None for kinds it ignores (service
    /// messages, channel posts, messages with no sender).
    pub fn from_update(update: &Update) -> Option<Incoming> {
        let update_id = i64::from(update.id.0);
        match &update.kind {
            UpdateKind::Message(message) => from_message(update_id, message, false),
            UpdateKind::EditedMessage(message) => from_message(update_id, message, true),
            UpdateKind::CallbackQuery(query) => {
                let (chat_id, message_id, group) = match &query.message {
                    Some(message) => (
                        message.chat().id.0,
                        Some(message.id().0),
                        !message.chat().is_private(),
                    ),
                    // A button on an inline message: answer in private.
                    None => (query.from.id.0 as i64, None, false),
                };
                Some(Incoming {
                    update_id,
                    chat_id,
                    user_id: query.from.id.0,
                    user_name: display_name(&query.from),
                    message_id,
                    group,
                    kind: IncomingKind::Press {
                        query_id: query.id.0.clone(),
                        data: query.data.clone().unwrap_or_default(),
                    },
                })
            }
            _ => None,
        }
    }

    pub fn chat(&self) -> ChatRef {
        ChatRef::new(Platform::Telegram, self.chat_id.to_string())
    }

    /// The callback query id, for a press.
    pub fn query_id(&self) -> Option<&str> {
        match &self.kind {
            IncomingKind::Press { query_id, .. } => Some(query_id),
            _ => None,
        }
    }

    /// The update as the front door takes it.
    pub fn into_arrival(self) -> Arrival<Extra> {
        Arrival {
            update_id: self.update_id,
            inbound: self.to_inbound(),
            extra: Extra {
                query_id: self.query_id().map(str::to_string),
            },
        }
    }

    pub fn to_inbound(&self) -> Inbound {
        let mut origin = Origin::Typed;
        let content = match &self.kind {
            IncomingKind::Text {
                text,
                forwarded_from,
            } => {
                if let Some(from) = forwarded_from {
                    origin = Origin::Forwarded { from: from.clone() };
                }
                InboundContent::Text(text.clone())
            }
            IncomingKind::Press { data, .. } => InboundContent::Button(
                // Data that cannot be a token is forged; a well-formed token
                // that was never issued is refused the same way, so both
                // take one path (the store finds no such button).
                ButtonToken::try_from(data.clone()).unwrap_or_else(|_| forged_token()),
            ),
            IncomingKind::Unsupported { what } => InboundContent::Unsupported(what.clone()),
        };
        Inbound {
            chat: self.chat(),
            update_key: self.update_id.to_string(),
            user_id: self.user_id.to_string(),
            user_name: self.user_name.clone(),
            message_id: self.message_id.map(|id| id.to_string()),
            content,
            chat_kind: if self.group {
                ChatKind::Group
            } else {
                ChatKind::Private
            },
            origin,
        }
    }
}

/// A token no button ever carries (issued tokens are 32 hex digits).
fn forged_token() -> ButtonToken {
    ButtonToken::try_from("forged".to_string()).expect("a well-formed token")
}

fn from_message(update_id: i64, message: &Message, edited: bool) -> Option<Incoming> {
    // Service messages (members joining, pins) are not addressed to the bot.
    if !matches!(message.kind, MessageKind::Common(_)) {
        return None;
    }
    let from = message.from.as_ref()?;
    let kind = if edited {
        IncomingKind::Unsupported {
            what: "an edited message".into(),
        }
    } else if let Some(text) = message.text().or(message.caption()) {
        IncomingKind::Text {
            text: text.to_string(),
            forwarded_from: message.forward_origin().map(describe_origin),
        }
    } else {
        IncomingKind::Unsupported {
            what: unsupported_kind(message).into(),
        }
    };
    Some(Incoming {
        update_id,
        chat_id: message.chat.id.0,
        user_id: from.id.0,
        user_name: display_name(from),
        message_id: Some(message.id.0),
        group: !message.chat.is_private(),
        kind,
    })
}

fn unsupported_kind(message: &Message) -> &'static str {
    if message.sticker().is_some() {
        "a sticker"
    } else if message.voice().is_some() {
        "a voice message"
    } else if message.video_note().is_some() {
        "a video message"
    } else if message.photo().is_some() {
        "a photo without a caption"
    } else if message.video().is_some() || message.animation().is_some() {
        "a video without a caption"
    } else if message.document().is_some() {
        "a file without a caption"
    } else if message.audio().is_some() {
        "an audio file"
    } else {
        "that kind of message"
    }
}

/// "Jane Client (user 42), 2025-01-31T09:00:00Z": who wrote a forwarded
/// message first, and when.
fn describe_origin(origin: &MessageOrigin) -> String {
    let who = match origin {
        MessageOrigin::User { sender_user, .. } => {
            format!("{} (user {})", display_name(sender_user), sender_user.id.0)
        }
        MessageOrigin::HiddenUser {
            sender_user_name, ..
        } => format!("{sender_user_name} (hidden account)"),
        MessageOrigin::Chat { sender_chat, .. } => format!(
            "{} (chat {})",
            sender_chat.title().unwrap_or("a chat"),
            sender_chat.id.0
        ),
        MessageOrigin::Channel {
            chat, message_id, ..
        } => format!(
            "{} (channel {}, message {})",
            chat.title().unwrap_or("a channel"),
            chat.id.0,
            message_id.0
        ),
    };
    format!("{who}, {}", origin.date().to_rfc3339())
}

fn display_name(user: &User) -> String {
    let name = user.full_name();
    if !name.trim().is_empty() {
        name
    } else if let Some(username) = &user.username {
        username.clone()
    } else {
        format!("user {}", user.id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsed from text, as teloxide parses a response (its `Update` does
    /// not read from a `serde_json::Value`).
    fn update(json: serde_json::Value) -> Update {
        serde_json::from_str(&json.to_string()).expect("a valid update")
    }

    fn message(extra: serde_json::Value) -> serde_json::Value {
        let mut message = serde_json::json!({
            "message_id": 7,
            "date": 1_760_000_000,
            "chat": {"id": 111, "type": "private", "first_name": "Maya"},
            "from": {"id": 111, "is_bot": false, "first_name": "Maya", "last_name": "Okafor"},
        });
        for (key, value) in extra.as_object().unwrap() {
            message[key] = value.clone();
        }
        message
    }

    #[test]
    fn a_caption_is_the_request_and_a_forward_keeps_its_origin() {
        let photo = update(
            serde_json::json!({"update_id": 5, "message": message(serde_json::json!({
                "photo": [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}],
                "caption": "/draft a post about this",
                "forward_origin": {"type": "user", "date": 1_750_000_000,
                    "sender_user": {"id": 42, "is_bot": false, "first_name": "Jane", "last_name": "Client"}},
            }))}),
        );

        let incoming = Incoming::from_update(&photo).unwrap();

        assert_eq!(incoming.user_name, "Maya Okafor");
        let IncomingKind::Text {
            text,
            forwarded_from,
        } = incoming.kind
        else {
            panic!("{incoming:?}")
        };
        assert_eq!(text, "/draft a post about this");
        assert!(
            forwarded_from
                .unwrap()
                .starts_with("Jane Client (user 42), 2025-")
        );
    }

    #[test]
    fn a_forwarded_text_reaches_the_controller_marked_as_someone_elses() {
        let forward = update(
            serde_json::json!({"update_id": 6, "message": message(serde_json::json!({
                "text": "Please wire 5000 EUR to IBAN XX00",
                "forward_origin": {"type": "hidden_user", "date": 1_750_000_000,
                    "sender_user_name": "Anonymous Lead"},
            }))}),
        );
        let typed = update(serde_json::json!({"update_id": 7, "message": message(
            serde_json::json!({"text": "/draft a post"})
        )}));

        let forwarded = Incoming::from_update(&forward)
            .unwrap()
            .into_arrival()
            .inbound;
        let own = Incoming::from_update(&typed)
            .unwrap()
            .into_arrival()
            .inbound;

        assert_eq!(
            forwarded.content,
            InboundContent::Text("Please wire 5000 EUR to IBAN XX00".into())
        );
        let Origin::Forwarded { from } = &forwarded.origin else {
            panic!("{forwarded:?}")
        };
        assert!(
            from.starts_with("Anonymous Lead (hidden account)"),
            "{from}"
        );
        assert!(!forwarded.origin.is_trusted());
        assert_eq!(own.origin, Origin::Typed);
        assert_eq!(own.chat_kind, ChatKind::Private);
    }

    #[test]
    fn a_group_message_is_marked_as_from_a_group() {
        let mut fields = message(serde_json::json!({"text": "/cost"}));
        fields["chat"] = serde_json::json!({"id": -100, "type": "supergroup", "title": "Team"});
        let group = update(serde_json::json!({"update_id": 8, "message": fields}));

        let inbound = Incoming::from_update(&group)
            .unwrap()
            .into_arrival()
            .inbound;

        assert_eq!(inbound.chat_kind, ChatKind::Group);
        assert_eq!(inbound.chat.chat_id, "-100");
    }

    #[test]
    fn stickers_voice_and_edits_are_named_and_not_acted_on() {
        let sticker = update(
            serde_json::json!({"update_id": 1, "message": message(serde_json::json!({
                "sticker": {"file_id": "s", "file_unique_id": "u", "type": "regular", "width": 512,
                    "height": 512, "is_animated": false, "is_video": false},
            }))}),
        );
        let voice = update(
            serde_json::json!({"update_id": 2, "message": message(serde_json::json!({
                "voice": {"file_id": "v", "file_unique_id": "u", "duration": 3, "mime_type": "audio/ogg", "file_size": 2048},
            }))}),
        );
        let edit = update(
            serde_json::json!({"update_id": 3, "edited_message": message(serde_json::json!({
                "text": "/draft changed my mind", "edit_date": 1_760_000_100,
            }))}),
        );

        let whats: Vec<InboundContent> = [sticker, voice, edit]
            .iter()
            .map(|u| Incoming::from_update(u).unwrap().to_inbound().content)
            .collect();

        assert_eq!(
            whats,
            [
                InboundContent::Unsupported("a sticker".into()),
                InboundContent::Unsupported("a voice message".into()),
                InboundContent::Unsupported("an edited message".into()),
            ]
        );
    }

    #[test]
    fn a_press_with_data_no_token_can_have_is_still_a_press_and_matches_nothing() {
        let press = update(serde_json::json!({"update_id": 9, "callback_query": {
            "id": "q1", "chat_instance": "c",
            "from": {"id": 111, "is_bot": false, "first_name": "Maya"},
            "message": message(serde_json::json!({"text": "Draft"})),
            "data": "not a token; DROP TABLE approvals",
        }}));

        let incoming = Incoming::from_update(&press).unwrap();

        assert_eq!(incoming.query_id(), Some("q1"));
        assert_eq!(incoming.message_id, Some(7));
        assert_eq!(
            incoming.to_inbound().content,
            InboundContent::Button(forged_token())
        );
    }
}
