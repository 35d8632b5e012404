//! `soloist chat`: the bot in a terminal. Reads lines, prints the bot's
//! messages, shows buttons as `[1] Approve  [2] Edit  [3] Reject`; typing a
//! number presses that button. Each line is handled to the end (the run
//! waits or finishes) before the next is read, so piped scripts behave the
//! same every time; with [`Console::echo_input`] each line read is printed
//! after its prompt, so a piped transcript reads as a conversation.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::controller::Controller;
use crate::domain::{
    Button, ChatKind, ChatRef, Inbound, InboundContent, Origin, Outbound, Platform,
};
use crate::store::StoreError;

/// The terminal's one conversation.
pub const CONSOLE_CHAT: &str = "console";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("terminal I/O failed")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A console session: who is typing, and the buttons last shown.
pub struct Console<W> {
    controller: Controller,
    output: W,
    user_name: String,
    session: String,
    line_number: u64,
    buttons: Vec<Button>,
    echo: bool,
    /// Where attachments are written (`<home>/files` from `soloist chat`).
    files_dir: std::path::PathBuf,
}

impl<W: AsyncWrite + Unpin> Console<W> {
    pub fn new(controller: Controller, output: W, user_name: String) -> Self {
        Console {
            controller,
            output,
            user_name,
            session: uuid::Uuid::new_v4().simple().to_string(),
            line_number: 0,
            buttons: Vec::new(),
            echo: false,
            files_dir: std::env::temp_dir().join("soloist-files"),
        }
    }

    /// Where the files messages carry are written (a proposal's PDF); the
    /// message shows the path.
    pub fn files_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.files_dir = dir;
        self
    }

    /// Prints each input line after the prompt: for input that is not a
    /// terminal (which echoes what is typed itself).
    pub fn echo_input(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// Prints the banner, resumes runs a crash interrupted, then handles
    /// lines until end of input.
    pub async fn run<R: AsyncBufRead + Unpin>(
        mut self,
        input: R,
        banner: &str,
    ) -> Result<(), ConsoleError> {
        self.output
            .write_all(format!("{banner}\n").as_bytes())
            .await?;
        if let Err(error) = self.controller.engine().resume_runnable().await {
            tracing::error!(error = ?error, "could not resume interrupted runs");
        }
        self.deliver().await?;
        let mut lines = input.lines();
        loop {
            self.output.write_all(b"> ").await?;
            self.output.flush().await?;
            let Some(line) = lines.next_line().await? else {
                break;
            };
            if self.echo {
                self.output
                    .write_all(format!("{}\n", sanitize(&line)).as_bytes())
                    .await?;
            }
            self.handle_line(&line).await?;
        }
        self.output.write_all(b"\n").await?;
        self.output.flush().await?;
        Ok(())
    }

    /// Handles one typed line and prints everything the bot says in reply.
    pub async fn handle_line(&mut self, line: &str) -> Result<(), ConsoleError> {
        self.line_number += 1;
        let inbound = Inbound {
            chat: ChatRef::new(Platform::Console, CONSOLE_CHAT),
            update_key: format!("{}:{}", self.session, self.line_number),
            user_id: "owner".into(),
            user_name: self.user_name.clone(),
            message_id: None,
            content: self.interpret(line),
            chat_kind: ChatKind::Private,
            origin: Origin::Typed,
        };
        if let Err(error) = self.controller.handle(&inbound).await {
            tracing::error!(error = ?error, "handling a console line failed");
            let sentence = error.user_message();
            self.print(&Outbound::text(sentence)).await?;
        }
        self.deliver().await
    }

    /// A number that matches a shown button presses it; anything else is
    /// text.
    fn interpret(&self, line: &str) -> InboundContent {
        let pressed = line
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.buttons.get(i));
        match pressed {
            Some(button) => InboundContent::Button(button.token.clone()),
            None => InboundContent::Text(line.to_string()),
        }
    }

    /// Prints and marks delivered every pending console message, in order.
    async fn deliver(&mut self) -> Result<(), ConsoleError> {
        let store = self.controller.store().clone();
        loop {
            let pending = store.pending_outbox(Platform::Console, 50).await?;
            if pending.is_empty() {
                return Ok(());
            }
            for mut message in pending {
                store.load_attachment(&mut message.message).await?;
                self.print(&message.message).await?;
                store.mark_delivered(message.id, None).await?;
            }
        }
    }

    async fn print(&mut self, message: &Outbound) -> Result<(), ConsoleError> {
        let mut text = sanitize(&message.text);
        if !message.buttons.is_empty() {
            self.buttons = message.buttons.clone();
            let labels: Vec<String> = message
                .buttons
                .iter()
                .enumerate()
                .map(|(i, b)| format!("[{}] {}", i + 1, sanitize(&b.label)))
                .collect();
            text.push('\n');
            text.push_str(&labels.join("  "));
        }
        if let Some(image) = &message.image {
            text.push_str(&format!("\n[image: {}]", sanitize(&image.file_name)));
        }
        if let Some(attachment) = &message.attachment {
            let line = match self.write_attachment(attachment).await {
                Ok(path) => format!("\n[file: {}]", sanitize(&path.display().to_string())),
                Err(error) => {
                    tracing::warn!(error = %error, "an attachment could not be written");
                    format!(
                        "\n[file {} could not be written: {}]",
                        sanitize(&attachment.file_name),
                        sanitize(&error)
                    )
                }
            };
            text.push_str(&line);
        }
        text.push('\n');
        self.output.write_all(text.as_bytes()).await?;
        self.output.flush().await?;
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> Console<W> {
    /// Writes an attachment under the files folder; its name is reduced to
    /// a plain file name (no folders, no dots in front), so a file name
    /// from a message cannot write elsewhere.
    async fn write_attachment(
        &self,
        attachment: &crate::domain::Attachment,
    ) -> Result<std::path::PathBuf, String> {
        let bytes = attachment.bytes()?;
        let name: String = attachment
            .file_name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = name.trim_start_matches('.');
        let name = if name.is_empty() { "attachment" } else { name };
        tokio::fs::create_dir_all(&self.files_dir)
            .await
            .map_err(|e| e.to_string())?;
        let path = self.files_dir.join(name);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| e.to_string())?;
        // The home is often "."; an absolute path can be opened from anywhere.
        Ok(tokio::fs::canonicalize(&path).await.unwrap_or(path))
    }
}

/// Terminal escaping: control characters (escape sequences, bells, NULs)
/// from a model or a pasted message must not drive the operator's terminal,
/// so they print as visible `\u{..}` codes. Newlines and tabs stay.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_print_as_visible_codes() {
        let cleaned = sanitize("a\u{1b}[31mred\u{0}\u{7}\nb\tc");
        assert_eq!(cleaned, "a\\u{1b}[31mred\\u{0}\\u{7}\nb\tc");
    }
}
