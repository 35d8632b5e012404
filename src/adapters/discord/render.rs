//! An [`Outbound`] in Discord's shape: Markdown escaped so the operator sees
//! the text the bot meant (a draft is copied elsewhere as it reads), no
//! pings whatever the text says, the 2000-character limit kept by attaching
//! the full text, buttons as components whose `custom_id` is the engine's
//! opaque token.

use base64::Engine as _;
use serde_json::{Value, json};

use super::rest::{Attachment, Body, EPHEMERAL};
use crate::domain::{Button, Decision, Outbound, clip};
use crate::frontdoor::utf16_len;

/// Discord's limit on a message's content (counted in UTF-16 units, as its
/// clients count).
pub const CONTENT_LIMIT: usize = 2000;

/// The name long text is attached under.
pub const FULL_TEXT_FILE: &str = "message.txt";

const ATTACHED_NOTE: &str = "\n\n… (the full text is attached as message.txt)";

/// The body of a message carrying `message`, optionally visible only to
/// the interaction's user.
pub fn render(message: &Outbound, ephemeral: bool) -> Body {
    let escaped = escape_markdown(&message.text);
    let mut files = Vec::new();
    let content = if utf16_len(&escaped) <= CONTENT_LIMIT {
        escaped
    } else {
        files.push(Attachment {
            name: FULL_TEXT_FILE.into(),
            mime: "text/plain; charset=utf-8",
            bytes: message.text.clone().into_bytes(),
        });
        let room = CONTENT_LIMIT - utf16_len(ATTACHED_NOTE);
        format!("{}{ATTACHED_NOTE}", preview(&escaped, room))
    };
    if let Some(image) = &message.image {
        match base64::engine::general_purpose::STANDARD.decode(&image.png_base64) {
            Ok(bytes) => files.push(Attachment {
                name: image.file_name.clone(),
                mime: "image/png",
                bytes,
            }),
            Err(error) => tracing::error!(%error, "an outbox image is not base64; sent without it"),
        }
    }
    if let Some(attachment) = &message.attachment {
        match attachment.bytes() {
            Ok(bytes) => files.push(Attachment {
                name: attachment.file_name.clone(),
                mime: known_mime(&attachment.content_type),
                bytes,
            }),
            Err(error) => {
                tracing::error!(%error, "an outbox attachment is unreadable; sent without it")
            }
        }
    }
    let mut payload = json!({
        "content": content,
        "allowed_mentions": {"parse": []},
        "components": button_rows(&message.buttons),
        "attachments": files
            .iter()
            .enumerate()
            .map(|(id, file)| json!({"id": id, "filename": file.name}))
            .collect::<Vec<_>>(),
    });
    if ephemeral {
        payload["flags"] = json!(EPHEMERAL);
    }
    Body { payload, files }
}

/// The content types soloist attaches, as the multipart part's type;
/// anything else goes as bytes.
fn known_mime(content_type: &str) -> &'static str {
    match content_type {
        "application/pdf" => "application/pdf",
        "text/markdown" | "text/markdown; charset=utf-8" => "text/markdown; charset=utf-8",
        "text/plain" | "text/plain; charset=utf-8" => "text/plain; charset=utf-8",
        "image/png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// The edit that closes an offer: its buttons give way to one disabled
/// button saying how it was decided ("Approved by Maya Okafor").
pub fn closed_offer(decision_text: &str) -> Value {
    let label = clip(decision_text.trim().trim_end_matches('.'), 79);
    json!({
        "components": [{
            "type": 1,
            "components": [{
                "type": 2,
                "style": 2,
                "label": label,
                "custom_id": "soloist-decided",
                "disabled": true,
            }],
        }],
    })
}

/// Buttons in rows of five (Discord's most), labels within 80 characters.
fn button_rows(buttons: &[Button]) -> Vec<Value> {
    buttons
        .chunks(5)
        .take(5)
        .map(|row| {
            let buttons: Vec<Value> = row
                .iter()
                .map(|button| {
                    json!({
                        "type": 2,
                        "style": style(&button.label),
                        "label": clip(&button.label, 79),
                        "custom_id": button.token.as_str(),
                    })
                })
                .collect();
            json!({"type": 1, "components": buttons})
        })
        .collect()
}

/// Green for approve, red for reject, grey otherwise.
fn style(label: &str) -> u8 {
    match Decision::ALL.iter().find(|d| d.label() == label) {
        Some(Decision::Approve) => 3,
        Some(Decision::Reject) => 4,
        _ => 2,
    }
}

/// Text shown as written: every Markdown character escaped with `\`, and
/// the line-start markers (headings, lists, quotes) too. Web addresses are
/// left whole so they stay links.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        escape_line(line, &mut out);
    }
    out
}

fn escape_line(line: &str, out: &mut String) {
    let body = line.trim_start();
    out.push_str(&line[..line.len() - body.len()]);
    // Headings, lists and "-#" subtext start a line; "1." starts a list.
    let marker_len = match body.chars().next() {
        Some('#' | '-' | '+') => 1,
        Some(c) if c.is_ascii_digit() => {
            let digits = body.chars().take_while(char::is_ascii_digit).count();
            if body[digits..].starts_with(". ") {
                digits
            } else {
                0
            }
        }
        _ => 0,
    };
    let (head, rest) = body.split_at(marker_len);
    match head.chars().last() {
        Some(c) if c.is_ascii_digit() => {
            out.push_str(head);
            out.push('\\');
        }
        Some(c) => {
            out.push('\\');
            out.push(c);
        }
        None => {}
    }
    for (n, word) in rest.split(' ').enumerate() {
        if n > 0 {
            out.push(' ');
        }
        if word.starts_with("https://") || word.starts_with("http://") {
            out.push_str(word);
            continue;
        }
        for c in word.chars() {
            if matches!(
                c,
                '\\' | '*' | '_' | '~' | '`' | '|' | '<' | '>' | '[' | ']' | '@'
            ) {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

/// The start of `text` within `room` UTF-16 units, cut at a paragraph,
/// line or word boundary when one is near.
fn preview(text: &str, room: usize) -> &str {
    let mut end = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        used += c.len_utf16();
        if used > room {
            break;
        }
        end = i + c.len_utf8();
    }
    let head = &text[..end];
    let boundary = ["\n\n", "\n", " "]
        .iter()
        .filter_map(|b| head.rfind(b))
        .find(|at| *at > end / 2);
    let cut = &head[..boundary.unwrap_or(end)];
    // A lone trailing backslash would escape the note after it.
    let backslashes = cut.len() - cut.trim_end_matches('\\').len();
    if backslashes % 2 == 1 {
        &cut[..cut.len() - 1]
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ButtonToken;

    #[test]
    fn markdown_characters_are_escaped_and_links_are_left_whole() {
        assert_eq!(
            escape_markdown("**bold** _it_ `code` ~~x~~ ||spoiler|| <@123> https://x.example/a_b"),
            "\\*\\*bold\\*\\* \\_it\\_ \\`code\\` \\~\\~x\\~\\~ \\|\\|spoiler\\|\\| \\<\\@123\\> https://x.example/a_b"
        );
    }

    #[test]
    fn line_start_markers_are_escaped_but_not_mid_line() {
        assert_eq!(
            escape_markdown("# Title\n- item\n  + more\n1. first\n> quote\nA - B 2. c"),
            "\\# Title\n\\- item\n  \\+ more\n1\\. first\n\\> quote\nA - B 2. c"
        );
    }

    #[test]
    fn everyone_mentions_cannot_ping() {
        let body = render(&Outbound::text("@everyone look"), false);
        assert_eq!(body.payload["allowed_mentions"], json!({"parse": []}));
        assert_eq!(body.payload["content"], "\\@everyone look");
    }

    #[test]
    fn long_text_keeps_within_the_limit_and_attaches_the_whole() {
        let text = "word ".repeat(1000);
        let body = render(&Outbound::text(text.trim_end()), false);
        let content = body.payload["content"].as_str().unwrap();
        assert!(
            utf16_len(content) <= CONTENT_LIMIT,
            "{}",
            utf16_len(content)
        );
        assert!(content.ends_with(ATTACHED_NOTE));
        assert_eq!(body.files.len(), 1);
        assert_eq!(body.files[0].bytes, text.trim_end().as_bytes());
        assert_eq!(body.payload["attachments"][0]["filename"], FULL_TEXT_FILE);
    }

    #[test]
    fn the_limit_counts_utf16_units_so_emoji_fill_it_twice_as_fast() {
        let text = "😀".repeat(1500); // 3000 UTF-16 units
        let body = render(&Outbound::text(text), false);
        let content = body.payload["content"].as_str().unwrap();
        assert!(utf16_len(content) <= CONTENT_LIMIT);
        assert_eq!(body.files.len(), 1);
    }

    #[test]
    fn a_preview_never_ends_in_half_an_escape() {
        let escaped = escape_markdown(&"*".repeat(3000));
        let cut = preview(&escaped, 1001);
        assert!(!cut.ends_with('\\') || cut.ends_with("\\\\"));
        assert_eq!(cut.len() % 2, 0);
    }

    #[test]
    fn buttons_carry_the_token_verbatim_as_custom_id() {
        let token = ButtonToken::generate();
        let message = Outbound::text("Draft").with_buttons(vec![Button {
            label: "Approve".into(),
            token: token.clone(),
        }]);
        let body = render(&message, true);
        let button = &body.payload["components"][0]["components"][0];
        assert_eq!(button["custom_id"], token.as_str());
        assert_eq!(button["style"], 3);
        assert_eq!(body.payload["flags"], EPHEMERAL);
    }

    #[test]
    fn a_closed_offer_shows_the_decision_on_a_disabled_button() {
        let edit = closed_offer("Approved by Maya Okafor.");
        let button = &edit["components"][0]["components"][0];
        assert_eq!(button["label"], "Approved by Maya Okafor");
        assert_eq!(button["disabled"], true);
        assert!(edit.get("content").is_none(), "the draft text stays");
    }
}
