//! What soloist says, in Telegram's shape: plain text (no `parse_mode`),
//! split under Telegram's length limits, images as photos. No I/O.
//!
//! Why plain text: drafts and replies carry model output and the operator's
//! own words, which may hold any of MarkdownV2's eighteen reserved
//! characters or HTML's `<` and `&`. Without a parse mode Telegram shows
//! every character as sent, so there is nothing to escape and no escaping
//! bug can garble a draft or make Telegram refuse it ("can't parse
//! entities"). soloist's messages use no bold or links, so nothing is lost.

use base64::Engine as _;

use crate::domain::{ApprovalRole, Outbound};

/// Telegram's limit for a message's text, in UTF-16 code units.
pub const TEXT_LIMIT: usize = 4096;
/// Telegram's limit for a photo's caption.
pub const CAPTION_LIMIT: usize = 1024;
/// Room kept free in each part of an approval offer, so that the edit that
/// closes it ("…\n\nApproved by Maya.") still fits.
const CLOSING_ROOM: usize = 300;

/// One Telegram message of an [`Outbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Photo {
        file_name: String,
        png: Vec<u8>,
        caption: Option<String>,
    },
    /// A text too long to split without cutting a word, as a file.
    Document {
        file_name: String,
        text: String,
    },
    /// A file the message carries (a proposal's PDF), sent as a document
    /// before the text, so the text part keeps the buttons and can be
    /// edited when an approval closes.
    File {
        file_name: String,
        bytes: Vec<u8>,
    },
}

/// An outbound message as the Telegram messages that carry it, in order;
/// the last one carries the buttons. Err when the image is not base64.
pub fn render(message: &Outbound) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = message.text.as_str();
    if let Some(attachment) = &message.attachment {
        parts.push(Part::File {
            file_name: attachment.file_name.clone(),
            bytes: attachment.bytes()?,
        });
    }
    if let Some(image) = &message.image {
        let png = base64::engine::general_purpose::STANDARD
            .decode(&image.png_base64)
            .map_err(|e| format!("the image {} is not valid base64: {e}", image.file_name))?;
        let fits = utf16_len(text) <= CAPTION_LIMIT;
        parts.push(Part::Photo {
            file_name: image.file_name.clone(),
            png,
            caption: (fits && !text.trim().is_empty()).then(|| text.to_string()),
        });
        if fits {
            text = "";
        }
    }
    if text.trim().is_empty() {
        if parts.is_empty() {
            // Telegram refuses an empty text; say so rather than drop it.
            parts.push(Part::Text("(empty message)".into()));
        }
        return Ok(parts);
    }
    let limit = match message.approval {
        Some(link) if link.role == ApprovalRole::Offer => TEXT_LIMIT - CLOSING_ROOM,
        _ => TEXT_LIMIT,
    };
    match split_text(text, limit) {
        Some(chunks) => parts.extend(chunks.into_iter().map(Part::Text)),
        None => {
            parts.push(Part::Document {
                file_name: "message.txt".into(),
                text: text.to_string(),
            });
            parts.push(Part::Text(
                "This message holds a word too long for a chat message, so it is attached as message.txt.".into(),
            ));
        }
    }
    Ok(parts)
}

/// What an approval offer reads after its decision: the offer's last part
/// (the one with the buttons) and the decision under it.
pub fn closing_text(offer: &Outbound, decision: &str) -> String {
    let last = render(offer)
        .ok()
        .and_then(|parts| {
            parts.into_iter().rev().find_map(|part| match part {
                Part::Text(text) => Some(text),
                _ => None,
            })
        })
        .unwrap_or_default();
    if last.is_empty() {
        decision.to_string()
    } else {
        format!("{last}\n\n{decision}")
    }
}

/// Splits `text` into pieces of at most `limit` UTF-16 units, at paragraph
/// breaks where it can, else at line breaks, else between words. None when
/// a single word is longer than `limit` (it cannot be split honestly).
pub fn split_text(text: &str, limit: usize) -> Option<Vec<String>> {
    let mut chunks = Vec::new();
    let mut rest = text.trim();
    while utf16_len(rest) > limit {
        let window = &rest[..prefix_within(rest, limit)];
        let cut = window
            .rfind("\n\n")
            .or_else(|| window.rfind('\n'))
            .or_else(|| window.rfind(char::is_whitespace))
            .filter(|&at| at > 0)?;
        chunks.push(window[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        chunks.push(rest.to_string());
    }
    Some(chunks)
}

/// The byte length of the longest prefix of `text` within `limit` UTF-16
/// units (one unit past it, so a break right after the limit is seen).
fn prefix_within(text: &str, limit: usize) -> usize {
    let mut units = 0;
    for (at, c) in text.char_indices() {
        units += c.len_utf16();
        if units > limit {
            return at + if c.is_whitespace() { c.len_utf8() } else { 0 };
        }
    }
    text.len()
}

pub fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ApprovalId, Image};

    fn words(text: &str) -> Vec<&str> {
        text.split_whitespace().collect()
    }

    #[test]
    fn long_text_splits_at_paragraphs_first_and_never_inside_a_word() {
        let paragraph = "word ".repeat(500);
        let text = format!("{paragraph}\n\n{paragraph}\n\n{}", "tail ".repeat(900));

        let chunks = split_text(&text, TEXT_LIMIT).unwrap();

        assert!(chunks.iter().all(|c| utf16_len(c) <= TEXT_LIMIT));
        assert_eq!(chunks[0], paragraph.trim_end(), "the first paragraph alone");
        let joined = chunks.join(" ");
        assert_eq!(words(&joined), words(&text));
    }

    #[test]
    fn emoji_count_as_telegram_counts_them() {
        // Each of these is two UTF-16 units: 3000 of them are 6000 units.
        let text = "👍 ".repeat(3000);

        let chunks = split_text(&text, TEXT_LIMIT).unwrap();

        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| utf16_len(c) <= TEXT_LIMIT));
    }

    #[test]
    fn a_word_longer_than_a_message_goes_as_a_file_with_the_buttons_after_it() {
        let text = "x".repeat(20_000);

        let parts = render(&Outbound::text(text.clone())).unwrap();

        assert!(matches!(&parts[0], Part::Document { text: t, .. } if *t == text));
        assert!(matches!(&parts[1], Part::Text(t) if t.contains("message.txt")));
    }

    #[test]
    fn an_image_with_a_short_text_is_one_captioned_photo() {
        let message = Outbound {
            image: Some(Image {
                file_name: "chart.png".into(),
                png_base64: "iVBORw0KGgo=".into(),
            }),
            ..Outbound::text("Costs this week")
        };

        let parts = render(&message).unwrap();

        assert_eq!(parts.len(), 1);
        assert!(
            matches!(&parts[0], Part::Photo { caption: Some(c), png, .. } if c == "Costs this week" && png.starts_with(b"\x89PNG"))
        );
    }

    #[test]
    fn a_closed_offer_keeps_its_last_part_and_adds_the_decision() {
        let offer = Outbound::text(format!("{}\n\nThe draft ends here.", "intro ".repeat(1000)))
            .linked_to(ApprovalId::new(), ApprovalRole::Offer);

        let closed = closing_text(&offer, "Approved by Maya.");

        assert!(closed.ends_with("The draft ends here.\n\nApproved by Maya."));
        assert!(utf16_len(&closed) <= TEXT_LIMIT);
    }
}
