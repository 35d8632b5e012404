//! Who may act, and where. Decided before anything about an update is
//! stored or acted on:
//!
//! - the terminal is the owner's;
//! - on a chat platform, the owner's account and the listed users may act,
//!   in a private chat with the bot, or in a group chat / guild channel
//!   only when that chat is listed (`telegram.allowed_chat_ids`,
//!   `discord.allowed_channel_ids`);
//! - reports with business data (pending drafts, runs, spend) are answered
//!   only in a private chat, where the person who asked is the one reading.
//!
//! Someone not allowed is a stranger: of their update only what the audit
//! row needs is kept (who, when, which chat, how long, a hash), never the
//! text, and they are refused only where nobody else reads it.

use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::domain::{ChatKind, Inbound, InboundContent, Outbound, Platform};

/// The one sentence someone not allowed gets.
pub const REFUSED: &str = "Sorry, this bot works only for its owner.";

/// What an allowed person hears in a group the bot is not set up for.
pub const CHAT_CLOSED: &str = "I work only in private chats and in the group chats listed in my settings; write to me privately.";

/// What a report asked for outside a private chat gets.
pub const REPORT_PRIVATE: &str =
    "That report shows business data, so I answer it only in a private chat with me: ask there.";

/// Whether an update may be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Not the owner nor a listed user.
    Stranger,
    /// An allowed person in a group chat that is not listed.
    ClosedChat,
}

/// Decides who may act, and where.
pub fn decide(settings: &Settings, inbound: &Inbound) -> Access {
    let platform = inbound.chat.platform;
    let (users, chats) = match platform {
        Platform::Console => return Access::Allowed,
        // Nobody speaks to soloist by e-mail (yet): it only sends.
        Platform::Email => return Access::Stranger,
        Platform::Telegram => (
            &settings.telegram.allowed_user_ids,
            &settings.telegram.allowed_chat_ids,
        ),
        Platform::Discord => (
            &settings.discord.allowed_user_ids,
            &settings.discord.allowed_channel_ids,
        ),
    };
    let person_allowed =
        settings.owner.is_owner(platform, &inbound.user_id) || users.contains(&inbound.user_id);
    if !person_allowed {
        return Access::Stranger;
    }
    match inbound.chat_kind {
        ChatKind::Private => Access::Allowed,
        ChatKind::Group if chats.contains(&inbound.chat.chat_id) => Access::Allowed,
        ChatKind::Group => Access::ClosedChat,
    }
}

/// The update as far as it may be kept: a stranger's text is replaced by
/// its length and a hash (enough to match a complaint to the audit row).
pub fn keepable(access: Access, inbound: &Inbound) -> Inbound {
    if access != Access::Stranger {
        return inbound.clone();
    }
    Inbound {
        content: InboundContent::Unsupported(fingerprint(&inbound.content)),
        user_name: String::new(),
        ..inbound.clone()
    }
}

/// "text from someone not allowed, 42 characters, sha256 1f2e…": what the
/// audit row says of a stranger's update instead of its content.
pub fn fingerprint(content: &InboundContent) -> String {
    match content {
        InboundContent::Text(text) => {
            let hash = Sha256::digest(text.as_bytes());
            let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!(
                "text from someone not allowed, {} characters, sha256 {hex}",
                text.chars().count()
            )
        }
        InboundContent::Button(_) => "a button press from someone not allowed".into(),
        // Already a fingerprint (the front door made it when recording).
        InboundContent::Unsupported(what) if what.contains("someone not allowed") => what.clone(),
        InboundContent::Unsupported(what) => format!("{what} from someone not allowed"),
    }
}

/// What the audit row says of an update that may not be acted on.
pub fn audit_detail(access: Access, inbound: &Inbound) -> String {
    match access {
        Access::ClosedChat => "an allowed user in a group chat not listed in settings".into(),
        _ => fingerprint(&inbound.content),
    }
}

/// The reply to an update that may not be acted on: privately, or not at
/// all where others would read it.
pub fn refusal(access: Access, inbound: &Inbound) -> Option<Outbound> {
    let text = match access {
        Access::Allowed => return None,
        Access::Stranger => REFUSED,
        Access::ClosedChat => CHAT_CLOSED,
    };
    inbound
        .answerable_privately()
        .then(|| Outbound::text(text).private_to(&inbound.update_key))
}

/// The sentence a report with business data gets outside a private chat;
/// None where it may be answered.
pub fn report_refusal(inbound: &Inbound, is_report: bool) -> Option<&'static str> {
    (is_report && inbound.chat_kind != ChatKind::Private).then_some(REPORT_PRIVATE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadOptions;
    use crate::domain::ChatRef;

    fn settings() -> Settings {
        let mut settings = Settings::load(&LoadOptions::default()).unwrap();
        settings.telegram.allowed_user_ids = vec!["111".into()];
        settings.telegram.allowed_chat_ids = vec!["-100".into()];
        settings
    }

    fn said(user: &str, chat: &str, kind: ChatKind) -> Inbound {
        Inbound {
            chat_kind: kind,
            ..Inbound::new(
                ChatRef::new(Platform::Telegram, chat),
                "1",
                user,
                "someone",
                InboundContent::Text("/cost".into()),
            )
        }
    }

    #[test]
    fn an_allowed_user_acts_in_private_and_in_listed_groups_only() {
        let settings = settings();
        assert_eq!(
            decide(&settings, &said("111", "111", ChatKind::Private)),
            Access::Allowed
        );
        assert_eq!(
            decide(&settings, &said("111", "-100", ChatKind::Group)),
            Access::Allowed
        );
        assert_eq!(
            decide(&settings, &said("111", "-200", ChatKind::Group)),
            Access::ClosedChat
        );
        assert_eq!(
            decide(&settings, &said("666", "666", ChatKind::Private)),
            Access::Stranger
        );
    }

    #[test]
    fn a_stranger_is_refused_in_private_and_not_at_all_in_a_group() {
        let settings = settings();
        let private = said("666", "666", ChatKind::Private);
        let group = said("666", "-100", ChatKind::Group);
        assert!(refusal(decide(&settings, &private), &private).is_some());
        assert!(refusal(decide(&settings, &group), &group).is_none());
    }

    #[test]
    fn a_strangers_text_is_kept_only_as_its_length_and_hash() {
        let inbound = said("666", "666", ChatKind::Private);
        let kept = keepable(Access::Stranger, &inbound);
        let InboundContent::Unsupported(what) = &kept.content else {
            panic!("{kept:?}")
        };
        assert!(!what.contains("/cost"), "{what}");
        assert!(
            what.contains("5 characters") && what.contains("sha256"),
            "{what}"
        );
        assert_eq!(keepable(Access::Allowed, &inbound), inbound);
        assert_eq!(
            keepable(Access::Stranger, &kept),
            kept,
            "a fingerprint is kept as it is"
        );
    }

    #[test]
    fn reports_are_answered_only_in_private() {
        assert!(report_refusal(&said("111", "-100", ChatKind::Group), true).is_some());
        assert!(report_refusal(&said("111", "111", ChatKind::Private), true).is_none());
        assert!(report_refusal(&said("111", "-100", ChatKind::Group), false).is_none());
    }
}
