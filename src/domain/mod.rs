//! The neutral types every module speaks: what arrives ([`Inbound`]), what
//! leaves ([`Outbound`]), buttons with opaque tokens, and typed ids. No I/O
//! here, and no platform type: adapters translate at the edge.

mod actions;
mod ids;
mod models;
mod run;

pub use actions::{Action, OfferChange, action_buttons};
pub use ids::{ApprovalId, ArtifactId, IdError, RunId};
pub use models::{CostLabel, Tier};
pub use run::{InputPurpose, JournalEvent, RunInput, RunStatus};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Console,
    Telegram,
    Discord,
    /// Outgoing e-mail (SMTP): a delivery target of the outbox, never a
    /// source of updates; its "chat" is the recipient's address.
    Email,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Console => "console",
            Platform::Telegram => "telegram",
            Platform::Discord => "discord",
            Platform::Email => "email",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "console" => Ok(Platform::Console),
            "telegram" => Ok(Platform::Telegram),
            "discord" => Ok(Platform::Discord),
            "email" => Ok(Platform::Email),
            other => Err(format!("unknown platform '{other}'")),
        }
    }
}

/// One conversation on one platform: a Telegram chat, a Discord channel, the
/// terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatRef {
    pub platform: Platform,
    pub chat_id: String,
}

impl ChatRef {
    pub fn new(platform: Platform, chat_id: impl Into<String>) -> Self {
        ChatRef {
            platform,
            chat_id: chat_id.into(),
        }
    }
}

/// Something a person did: typed text, or pressed a button. Serializable:
/// the front door records it before handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub chat: ChatRef,
    /// Unique per platform update; a second delivery of the same update
    /// carries the same key and is dropped.
    pub update_key: String,
    pub user_id: String,
    pub user_name: String,
    /// The platform's id for the message, when it has one.
    pub message_id: Option<String>,
    pub content: InboundContent,
    /// A private chat with the bot, or a chat others read too: what may be
    /// said there depends on it (see `controller::access`).
    #[serde(default)]
    pub chat_kind: ChatKind,
    /// Who wrote the text: the sender, or a third party whose message the
    /// sender forwarded (untrusted data, never instructions).
    #[serde(default)]
    pub origin: Origin,
}

impl Inbound {
    /// An update typed by `user_id` in a private chat; adapters set
    /// [`Inbound::chat_kind`] and [`Inbound::origin`] when they know better.
    pub fn new(
        chat: ChatRef,
        update_key: impl Into<String>,
        user_id: impl Into<String>,
        user_name: impl Into<String>,
        content: InboundContent,
    ) -> Self {
        Inbound {
            chat,
            update_key: update_key.into(),
            user_id: user_id.into(),
            user_name: user_name.into(),
            message_id: None,
            content,
            chat_kind: ChatKind::Private,
            origin: Origin::Typed,
        }
    }
}

impl Inbound {
    /// Whether a reply can reach the sender alone: in a private chat, or
    /// through an interaction only its sender sees the answer to (Discord
    /// slash commands and presses, keyed `interaction:…`).
    pub fn answerable_privately(&self) -> bool {
        self.chat_kind == ChatKind::Private || self.update_key.starts_with("interaction:")
    }
}

/// Whether a chat is the bot and one person, or a room others read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    /// A one-to-one chat with the bot (a Telegram private chat, a Discord
    /// DM, the terminal).
    #[default]
    Private,
    /// A group, supergroup, channel or guild channel.
    Group,
}

/// Where an update's text comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// The sender wrote it.
    #[default]
    Typed,
    /// The sender forwarded someone else's message: `from` names the
    /// original author (and when, as the platform tells it). The text is
    /// data from outside, not an instruction of the sender's.
    Forwarded { from: String },
}

impl Origin {
    /// Whether the text is the sender's own words.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Origin::Typed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum InboundContent {
    Text(String),
    Button(ButtonToken),
    /// Something the bot cannot act on (a sticker, a voice message, an
    /// edit), named for the reply: "a sticker". Nothing of it is acted on.
    Unsupported(String),
}

/// Something the bot says. Buttons, when present, are offered with the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// A file sent with the message (a proposal's PDF): Telegram sends it
    /// as a document before the text, Discord as an attachment, the
    /// console writes it to a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// Set when the message offers an approval's buttons, or reports its
    /// decision: adapters edit the offer in place (buttons removed) when
    /// they can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalLink>,
    /// Set on a reply meant only for the person whose update it answers (a
    /// refusal, "no longer open"): that update's key. A platform that can
    /// show a message to one person alone (Discord's ephemeral replies) does;
    /// the others send it as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_to: Option<String>,
    /// The update this message answers directly (set by the controller on
    /// its replies). A platform that shows "working on it" for an update
    /// (Discord's deferred response) fills that response with this message
    /// and with no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<String>,
}

/// How a message relates to an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalLink {
    pub id: ApprovalId,
    pub role: ApprovalRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalRole {
    /// Carries the approval's buttons.
    Offer,
    /// Says how the approval was decided; the offer's buttons should go.
    Closed,
}

impl Outbound {
    pub fn text(text: impl Into<String>) -> Self {
        Outbound {
            text: text.into(),
            buttons: Vec::new(),
            image: None,
            attachment: None,
            approval: None,
            private_to: None,
            answers: None,
        }
    }

    /// Marks the message as meant only for the sender of `update_key`.
    pub fn private_to(mut self, update_key: &str) -> Self {
        self.private_to = Some(update_key.to_string());
        self
    }

    pub fn with_buttons(mut self, buttons: Vec<Button>) -> Self {
        self.buttons = buttons;
        self
    }

    pub fn with_attachment(mut self, attachment: Attachment) -> Self {
        self.attachment = Some(attachment);
        self
    }

    pub fn linked_to(mut self, id: ApprovalId, role: ApprovalRole) -> Self {
        self.approval = Some(ApprovalLink { id, role });
        self
    }
}

/// An image to send, e.g. a digest chart (PNG bytes, base64 in the outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub file_name: String,
    pub png_base64: String,
}

/// A file a message carries. Its bytes are either inline (base64, for small
/// files) or a blob stored once in the database (`blobs` table), so an
/// outbox row stays small; delivery resolves a blob before the adapter
/// sees the message ([`Attachment::bytes`] then works).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub file_name: String,
    pub content_type: String,
    pub body: AttachmentBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentBody {
    Base64(String),
    /// The id of a stored blob (its SHA-256, hex).
    Blob(String),
}

impl Attachment {
    pub fn inline(file_name: &str, content_type: &str, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        Attachment {
            file_name: file_name.to_string(),
            content_type: content_type.to_string(),
            body: AttachmentBody::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// The file's bytes. Err for a blob not yet resolved, or bad base64.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        match &self.body {
            AttachmentBody::Base64(data) => base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| format!("the attachment {} is not valid base64: {e}", self.file_name)),
            AttachmentBody::Blob(id) => Err(format!(
                "the attachment {} is stored blob {id}, not loaded",
                self.file_name
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub token: ButtonToken,
}

/// The opaque, unguessable token a button carries as callback data. It says
/// nothing about what pressing it means; the store maps it to an approval and
/// a choice. At most 64 bytes (Telegram's callback-data limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ButtonToken(String);

impl ButtonToken {
    pub const MAX_LEN: usize = 64;

    /// A fresh random token (32 hex characters, 122 random bits).
    pub fn generate() -> Self {
        ButtonToken(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ButtonToken {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(ButtonToken(value))
        } else {
            Err("a button token is 1 to 64 characters of [A-Za-z0-9_-]".into())
        }
    }
}

impl From<ButtonToken> for String {
    fn from(token: ButtonToken) -> String {
        token.0
    }
}

/// What an approval button means. Stored next to its token, never in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Edit,
    Reject,
    /// FUNNEL: the operator says what to change; the flow rewrites it.
    Revise,
    /// FUNNEL: offer the version before the latest revision again.
    Back,
}

impl Decision {
    pub const ALL: [Decision; 3] = [Decision::Approve, Decision::Edit, Decision::Reject];
    /// Every decision, in the order buttons show them.
    pub const EVERY: [Decision; 5] = [
        Decision::Approve,
        Decision::Revise,
        Decision::Back,
        Decision::Edit,
        Decision::Reject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Edit => "edit",
            Decision::Reject => "reject",
            Decision::Revise => "revise",
            Decision::Back => "back",
        }
    }

    /// How a decision reads on the message it closed: "Approved by Maya".
    pub fn past_tense(self) -> &'static str {
        match self {
            Decision::Approve => "Approved",
            Decision::Edit => "Edit requested",
            Decision::Reject => "Rejected",
            Decision::Revise => "Revision requested",
            Decision::Back => "Previous version restored",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Decision::Approve => "Approve",
            Decision::Edit => "Edit",
            Decision::Reject => "Reject",
            Decision::Revise => "Revise",
            Decision::Back => "Back",
        }
    }
}

impl FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approve" => Ok(Decision::Approve),
            "edit" => Ok(Decision::Edit),
            "reject" => Ok(Decision::Reject),
            "revise" => Ok(Decision::Revise),
            "back" => Ok(Decision::Back),
            other => Err(format!("unknown decision '{other}'")),
        }
    }
}

/// Text on one line, cut to `max` characters with an ellipsis: for lists
/// and logs.
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_fit_telegram_callback_data_and_differ() {
        let a = ButtonToken::generate();
        let b = ButtonToken::generate();
        assert!(a.as_str().len() <= ButtonToken::MAX_LEN);
        assert_ne!(a, b);
    }

    #[test]
    fn oversized_or_odd_tokens_are_refused() {
        assert!(ButtonToken::try_from("x".repeat(65)).is_err());
        assert!(ButtonToken::try_from("a b".to_string()).is_err());
        assert!(ButtonToken::try_from(String::new()).is_err());
    }
}
