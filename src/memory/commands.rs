//! The memory chat commands: `/remember`, `/memory`, `/forget`, `/sources`,
//! `/forget_person`. The controller's command table names them and hands
//! the text after the name here (see `controller::memory`); every answer is
//! one message of plain text.

use std::fmt::Write;

use super::chunk::Format;
use super::{Document, IngestOutcome, Memory, MemoryError, SourceKind, content_hash, label};
use crate::domain::{Inbound, clip};

/// The reply for a command's result: its text, or a failure as a sentence
/// (the cause chain goes to the log).
pub fn reply(result: Result<String, MemoryError>) -> String {
    result.unwrap_or_else(|error| {
        tracing::warn!(error = ?error, "memory command failed");
        "I could not reach my memory just now (the database failed). Nothing changed; try again in a moment.".into()
    })
}

pub async fn remember(memory: &Memory, text: &str, by: &str) -> Result<String, MemoryError> {
    if text.is_empty() {
        return Ok(
            "Tell me what to remember, e.g. /remember The studio is closed in August.".into(),
        );
    }
    if (text.starts_with("http://") || text.starts_with("https://"))
        && !text.contains(char::is_whitespace)
    {
        return Ok(
            match memory.ingest_url(text, &format!("link sent by {by}")).await {
                Ok((_, IngestOutcome::Unchanged)) => format!("I already had {text}, unchanged."),
                Ok((_, outcome)) => format!("Read {text}: {outcome}. /forget {text} removes it."),
                Err(MemoryError::Fetch(error)) => {
                    format!("I could not read that link: {error}.")
                }
                Err(other) => return Err(other),
            },
        );
    }
    let name = format!("note:{}", &content_hash(text)[..12]);
    let doc = Document {
        name: name.clone(),
        kind: SourceKind::Note,
        format: Format::Text,
        text: text.to_string(),
        url: String::new(),
        origin: format!("chat message from {by}"),
    };
    Ok(match memory.ingest(&doc).await? {
        IngestOutcome::Unchanged => format!("I already knew that ({name})."),
        _ => format!("Remembered as {name}. /forget {name} removes it."),
    })
}

pub async fn search(memory: &Memory, query: &str) -> Result<String, MemoryError> {
    if query.is_empty() {
        return Ok("Tell me what to look up, e.g. /memory Brand Sprint price".into());
    }
    let hits = memory
        .retrieve(query, memory.settings().top_k.max(1))
        .await?;
    if hits.is_empty() {
        return Ok(format!(
            "Nothing in memory matches '{}'. /sources lists what I know from.",
            clip(query, 60)
        ));
    }
    let mut text = format!("For '{}' I would retrieve:", clip(query, 60));
    for (n, hit) in hits.iter().enumerate() {
        let _ = write!(
            text,
            "\n{}. {} (score {:.2}; {})\n   “{}”",
            n + 1,
            hit.citation(),
            hit.score,
            hit.why,
            clip(&hit.text, 140)
        );
    }
    Ok(text)
}

pub async fn forget(memory: &Memory, name: &str) -> Result<String, MemoryError> {
    if name.is_empty() {
        return Ok("Tell me which source to forget; /sources lists them.".into());
    }
    Ok(match memory.forget(name).await? {
        Some((full, chunks)) => format!("Forgot {full} ({chunks} chunks removed)."),
        None => format!(
            "No single source is called '{}'; /sources lists them by name.",
            clip(name, 60)
        ),
    })
}

pub async fn sources(memory: &Memory) -> Result<String, MemoryError> {
    let sources = memory.sources().await?;
    if sources.is_empty() {
        return Ok("I know nothing yet: run soloist ingest PATH, or send /remember TEXT.".into());
    }
    let mut text = format!("I know from {} sources:", sources.len());
    for source in &sources {
        let day = chrono::DateTime::from_timestamp_millis(source.refreshed_at)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let _ = write!(
            text,
            "\n{} ({}, {} chunks, checked {day}){}",
            source.name,
            source.kind,
            source.chunks,
            if label(&source.name) != source.title {
                format!(": {}", clip(&source.title, 60))
            } else {
                String::new()
            }
        );
    }
    Ok(text)
}

/// Names shorter than this would match too much to erase safely.
const MIN_PERSON_CHARS: usize = 3;

pub async fn forget_person(
    memory: &Memory,
    who: &str,
    inbound: &Inbound,
) -> Result<String, MemoryError> {
    let who = who.trim();
    if who.chars().count() < MIN_PERSON_CHARS {
        return Ok(format!(
            "Give the person's e-mail or full name (at least {MIN_PERSON_CHARS} characters), e.g. /forget_person ana@example.com"
        ));
    }
    let erased = super::db::erase_mentions(memory.store(), who).await?;
    let total = erased.knowledge_chunks
        + erased.decisions
        + erased.messages
        + erased.journal_rows
        + erased.outbox_rows;
    // The audit keeps that an erasure happened and its size, never whom.
    memory
        .store()
        .audit(
            inbound.chat.platform,
            &inbound.user_id,
            "erasure",
            &format!("forget-person removed {total} rows"),
        )
        .await?;
    Ok(format!(
        "Erased what I stored about that person: {} knowledge chunks, {} saved drafts, {} chat messages; {} run records and {} sent messages rewritten without them ({total} rows). The audit log notes only that an erasure happened.",
        erased.knowledge_chunks,
        erased.decisions,
        erased.messages,
        erased.journal_rows,
        erased.outbox_rows
    ))
}
