//! Ingestion: a document becomes a source and its chunks. The source's
//! content hash decides what happens: unchanged, nothing (only its
//! `refreshed_at` moves); changed, its chunks are replaced in one
//! transaction; new, it is added.

use std::path::{Path, PathBuf};

use super::chunk::{ChunkLimits, Format, parse};
use super::db::{self, NewSource};
use super::fetch::{self, FetchLimits};
use super::{Memory, MemoryError, content_hash, label};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Url,
    Note,
}

impl SourceKind {
    fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Url => "url",
            SourceKind::Note => "note",
        }
    }
}

/// A document to ingest.
#[derive(Debug, Clone)]
pub struct Document {
    /// Unique: a path, a URL, `note:…`. Ingesting the same name again
    /// refreshes that source.
    pub name: String,
    pub kind: SourceKind,
    pub format: Format,
    pub text: String,
    pub url: String,
    /// Where it came from (a path, a URL, who sent it).
    pub origin: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    Added { chunks: usize },
    Replaced { chunks: usize },
    Unchanged,
}

impl std::fmt::Display for IngestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestOutcome::Added { chunks } => write!(f, "added ({chunks} chunks)"),
            IngestOutcome::Replaced { chunks } => write!(f, "changed, replaced ({chunks} chunks)"),
            IngestOutcome::Unchanged => write!(f, "unchanged"),
        }
    }
}

impl Memory {
    pub async fn ingest(&self, doc: &Document) -> Result<IngestOutcome, MemoryError> {
        let hash = content_hash(&doc.text);
        let existing = db::source(&self.store, &doc.name).await?;
        if let Some(source) = &existing
            && source.content_hash == hash
        {
            db::touch_source(&self.store, &source.id).await?;
            // Vectors a failed embedding left missing are made now.
            self.embed_source(&doc.name).await?;
            return Ok(IngestOutcome::Unchanged);
        }
        let limits = ChunkLimits {
            max_chars: self.settings.chunk_chars,
            overlap_chars: self.settings.overlap_chars,
        };
        let parsed = parse(&doc.text, doc.format, limits);
        let source = NewSource {
            name: doc.name.clone(),
            kind: doc.kind.as_str(),
            title: parsed.title.unwrap_or_else(|| label(&doc.name).to_string()),
            url: doc.url.clone(),
            origin: doc.origin.clone(),
            content_hash: hash,
            weight: 1.0,
            meta: "{}".into(),
        };
        db::replace_source(&self.store, &source, &parsed.chunks).await?;
        let chunks = parsed.chunks.len();
        tracing::info!(source = %doc.name, chunks, "ingested");
        self.embed_source(&doc.name).await?;
        Ok(match existing {
            Some(_) => IngestOutcome::Replaced { chunks },
            None => IngestOutcome::Added { chunks },
        })
    }

    /// Embeds the chunks of `source` that have no vector for the configured
    /// embedder yet: a text embedded before (in this source or any other)
    /// is never sent again. Returns how many texts were embedded.
    pub async fn embed_source(&self, source: &str) -> Result<usize, MemoryError> {
        let Some(embedder) = &self.embedder else {
            return Ok(0);
        };
        let model = embedder.name();
        let missing = super::vectors::missing_for_source(&self.store, source, &model).await?;
        if missing.is_empty() {
            return Ok(0);
        }
        for batch in missing.chunks(super::embed::BATCH) {
            let texts: Vec<String> = batch.iter().map(|(_, text)| text.clone()).collect();
            let vectors = embedder
                .embed(&texts)
                .await
                .map_err(MemoryError::NotEmbedded)?;
            let rows: Vec<(String, Vec<f32>)> = batch
                .iter()
                .map(|(hash, _)| hash.clone())
                .zip(vectors)
                .collect();
            super::vectors::insert(&self.store, &model, &rows).await?;
        }
        tracing::info!(source, embedded = missing.len(), %model, "embedded");
        Ok(missing.len())
    }

    /// A file, or every readable file under a folder (recursively). Files
    /// of other types in a folder are skipped; a single file of another
    /// type is an error.
    pub async fn ingest_path(
        &self,
        path: &Path,
    ) -> Result<Vec<(String, IngestOutcome)>, MemoryError> {
        let files = if path.is_dir() {
            readable_files(path)?
        } else if format_of(path).is_some() {
            vec![path.to_path_buf()]
        } else {
            return Err(MemoryError::Unsupported(path.display().to_string()));
        };
        let mut outcomes = Vec::new();
        for file in files {
            let Some(format) = format_of(&file) else {
                continue;
            };
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| MemoryError::Read {
                path: shown.clone(),
                source,
            })?;
            let doc = Document {
                name: shown.clone(),
                kind: SourceKind::File,
                format,
                text,
                url: String::new(),
                origin: format!("file {shown}"),
            };
            outcomes.push((shown, self.ingest(&doc).await?));
        }
        if outcomes
            .iter()
            .any(|(_, outcome)| *outcome != IngestOutcome::Unchanged)
        {
            self.compact_fulltext().await?;
        }
        Ok(outcomes)
    }
}

impl Memory {
    /// Merges the full-text index after a batch of sources (see
    /// [`fulltext::compact`]); `ingest_path` calls it when anything changed.
    pub async fn compact_fulltext(&self) -> Result<(), MemoryError> {
        Ok(super::fulltext::compact(&self.store).await?)
    }

    /// Fetches a public page (see [`super::fetch`]) and ingests its text
    /// under its URL. Returns where the fetch ended up and what happened.
    pub async fn ingest_url(
        &self,
        url: &str,
        origin: &str,
    ) -> Result<(String, IngestOutcome), MemoryError> {
        self.ingest_url_guarded(url, origin, FetchLimits::default(), fetch::is_public)
            .await
    }

    /// Fetches every URL source again (against drift): an unchanged page
    /// only moves its `refreshed_at`; a changed one has its chunks replaced
    /// and the change noted in the audit log. The scheduler calls this on
    /// a cron; `soloist ingest --refresh` calls it by hand. One page that
    /// fails does not stop the others.
    pub async fn refresh_urls(
        &self,
    ) -> Result<Vec<(String, Result<IngestOutcome, String>)>, MemoryError> {
        self.refresh_urls_guarded(FetchLimits::default(), fetch::is_public)
            .await
    }

    /// [`Memory::refresh_urls`] with other limits and address rule (tests).
    pub async fn refresh_urls_guarded(
        &self,
        limits: FetchLimits,
        allowed: impl Fn(std::net::IpAddr) -> bool + Copy,
    ) -> Result<Vec<(String, Result<IngestOutcome, String>)>, MemoryError> {
        let mut outcomes = Vec::new();
        for source in db::sources(&self.store).await? {
            if source.kind != "url" {
                continue;
            }
            let result = self
                .ingest_url_guarded(&source.name, &source.origin, limits, allowed)
                .await;
            let outcome = match result {
                Ok((_, outcome)) => {
                    if matches!(outcome, IngestOutcome::Replaced { .. }) {
                        self.store
                            .audit(
                                crate::domain::Platform::Console,
                                "soloist",
                                "source_changed",
                                &format!("{} changed since it was last fetched", source.name),
                            )
                            .await?;
                    }
                    Ok(outcome)
                }
                Err(MemoryError::Store(error)) => return Err(MemoryError::Store(error)),
                Err(error) => {
                    tracing::warn!(source = %source.name, error = ?error, "refreshing a source failed");
                    Err(error.to_string())
                }
            };
            outcomes.push((source.name, outcome));
        }
        Ok(outcomes)
    }

    /// [`Memory::ingest_url`] with other limits and address rule (tests).
    pub async fn ingest_url_guarded(
        &self,
        url: &str,
        origin: &str,
        limits: FetchLimits,
        allowed: impl Fn(std::net::IpAddr) -> bool,
    ) -> Result<(String, IngestOutcome), MemoryError> {
        let page = fetch::fetch(url, limits, allowed).await?;
        let doc = Document {
            name: url.to_string(),
            kind: SourceKind::Url,
            format: page.format,
            text: page.text,
            url: page.final_url.clone(),
            origin: origin.to_string(),
        };
        Ok((page.final_url, self.ingest(&doc).await?))
    }
}

fn format_of(path: &Path) -> Option<Format> {
    path.extension()
        .and_then(|e| e.to_str())
        .and_then(Format::from_extension)
}

/// Readable files under `dir`, sorted, hidden ones skipped.
fn readable_files(dir: &Path) -> Result<Vec<PathBuf>, MemoryError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| MemoryError::Read {
            path: folder.display().to_string(),
            source,
        })?;
        for path in entries.flatten().map(|e| e.path()) {
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if format_of(&path).is_some() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
