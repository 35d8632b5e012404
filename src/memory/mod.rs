//! Memory that compounds: what the business knows (files, pages, notes cut
//! into chunks with their provenance), what was decided (approved drafts
//! as brand-voice examples, rejections with their reasons), the recent
//! conversation, and a run's working values with an expiry.
//!
//! Retrieval is full text on both databases (`fulltext`: SQLite FTS5,
//! PostgreSQL `tsvector` + GIN) and, with an embedder configured (`embed`), vector
//! similarity over vectors stored in the database and scanned in process
//! (`vectors`); the two candidate lists are fused by reciprocal rank, then
//! a per-source weight and a recency decay, top-k with the source, section,
//! which list found each hit and why. The draft flow's
//! `retrieve` step passes the hits to the model as quoted material and the
//! approval names its sources in one line.

pub mod chunk;
pub mod cli;
pub mod commands;
mod db;
pub mod embed;
pub mod eval;
pub mod fetch;
mod fulltext;
mod ingest;
#[cfg(feature = "local-embed")]
pub mod local;
mod retrieve;
pub mod vectors;

pub use db::Scope;
pub use ingest::{Document, IngestOutcome, SourceKind};
pub use retrieve::{DecisionHit, Hit, Recall, Turn, retrieval_line, sources_in};

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// `[memory]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    /// `"none"`: full-text retrieval only. `"provider/model"`: an
    /// OpenAI-compatible `/embeddings` endpoint of a configured provider
    /// (costed and budgeted like every model call), fused with full text.
    /// `"local"`: all-MiniLM-L6-v2 in process (the `local-embed` build).
    pub embedder: String,
    /// The folder with the local model's `model.safetensors`,
    /// `tokenizer.json` and `config.json` (for `embedder = "local"`).
    pub local_model_dir: String,
    /// How many knowledge chunks a draft sees.
    pub top_k: usize,
    /// Full-text retrieval ranks at most about this many matching chunks
    /// (`fulltext::search_knowledge`): rarest query words first, then the newest
    /// matches. Below it in all, the ranking is exact. Fused with vectors,
    /// half of it.
    pub text_rank_cap: usize,
    /// Chunk size bound and the overlap between neighbours, in characters.
    pub chunk_chars: usize,
    pub overlap_chars: usize,
    /// A source's score halves in this many days (blended: see
    /// `recency_share`); 0 turns the decay off.
    pub recency_half_life_days: f64,
    /// How much of a hit's score the recency decay may take away (0..1).
    pub recency_share: f64,
    /// Score factor by source name, file name or kind (`file`, `url`,
    /// `note`, `decision`); 1 when not named.
    pub source_weights: BTreeMap<String, f64>,
    /// How long a run's working values are kept.
    pub working_ttl_secs: u64,
    /// How often expired working values are purged.
    pub purge_every_secs: u64,
    /// The recent conversation given to a draft, bounded in tokens.
    pub chat_window_tokens: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            embedder: "none".into(),
            local_model_dir: String::new(),
            top_k: 4,
            text_rank_cap: 1000,
            chunk_chars: 1200,
            overlap_chars: 200,
            recency_half_life_days: 180.0,
            recency_share: 0.2,
            source_weights: BTreeMap::new(),
            working_ttl_secs: 24 * 3600,
            purge_every_secs: 600,
            chat_window_tokens: 600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a file or folder soloist can read (Markdown, plain text or HTML)")]
    Unsupported(String),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error(
        "{0}. The text is stored and found by its words; ingest it again later to add its meaning"
    )]
    NotEmbedded(#[source] embed::EmbedError),
}

impl From<sqlx::Error> for MemoryError {
    fn from(error: sqlx::Error) -> Self {
        MemoryError::Store(error.into())
    }
}

/// Memory over one store; cheap to build and to clone.
#[derive(Debug, Clone)]
pub struct Memory {
    store: Store,
    settings: MemorySettings,
    embedder: Option<embed::Embedder>,
}

impl Memory {
    /// Memory with full-text retrieval only.
    pub fn new(store: Store, settings: MemorySettings) -> Memory {
        Memory {
            store,
            settings,
            embedder: None,
        }
    }

    /// Memory as `settings` configure it, with its embedder. An embedder
    /// setting that cannot be used is logged and left out (full text
    /// still works); `soloist doctor` names the problem.
    pub fn from_settings(store: Store, settings: &crate::config::Settings) -> Memory {
        let embedder = match embed::Embedder::from_settings(settings, store.clone()) {
            Ok(embedder) => embedder,
            Err(problem) => {
                tracing::warn!(%problem, "semantic retrieval is off");
                None
            }
        };
        Memory {
            store,
            settings: settings.memory.clone(),
            embedder,
        }
    }

    pub fn embedder(&self) -> Option<&embed::Embedder> {
        self.embedder.as_ref()
    }

    pub fn settings(&self) -> &MemorySettings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every source but decisions.
    pub async fn sources(&self) -> Result<Vec<db::SourceRow>, MemoryError> {
        Ok(db::sources(&self.store).await?)
    }

    /// Removes a source and its chunks: by its full name, or by its file
    /// name when exactly one source has it. Returns (name, chunks removed).
    pub async fn forget(&self, name: &str) -> Result<Option<(String, u64)>, MemoryError> {
        let name = name.trim();
        let full = match db::source(&self.store, name).await? {
            Some(source) => source.name,
            None => {
                let matching: Vec<String> = db::sources(&self.store)
                    .await?
                    .into_iter()
                    .filter(|s| label(&s.name) == name || s.title == name)
                    .map(|s| s.name)
                    .collect();
                match matching.as_slice() {
                    [one] => one.clone(),
                    _ => return Ok(None),
                }
            }
        };
        Ok(db::delete_source(&self.store, &full)
            .await?
            .map(|chunks| (full, chunks)))
    }

    /// Keeps a run's intermediate value until `working_ttl_secs` from now.
    pub async fn keep(&self, run_id: &str, key: &str, value: &str) -> Result<(), MemoryError> {
        let ttl =
            i64::try_from(self.settings.working_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let expires_at = crate::store::now_ms().saturating_add(ttl);
        Ok(db::put_working(&self.store, run_id, key, value, expires_at).await?)
    }

    /// A run's value, unless it has expired.
    pub async fn kept(&self, run_id: &str, key: &str) -> Result<Option<String>, MemoryError> {
        Ok(db::get_working(&self.store, run_id, key).await?)
    }

    /// Deletes working values expired by `now` (Unix ms); returns how many.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, MemoryError> {
        Ok(db::purge_working(&self.store, now).await?)
    }
}

/// Purges expired working memory every `purge_every_secs` until shutdown.
/// The runtime spawns it next to the worker.
pub async fn purge_periodically(
    memory: Memory,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let every = Duration::from_secs(memory.settings.purge_every_secs.max(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        match memory.purge_expired(crate::store::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired working memory purged"),
            Err(error) => tracing::warn!(error = ?error, "purging working memory failed"),
        }
    }
}

/// `soloist doctor`'s line about retrieval.
pub fn doctor_finding(settings: &crate::config::Settings) -> crate::doctor::Finding {
    use crate::doctor::Finding;
    match embed::check(settings) {
        Ok(embed::EmbedderChoice::None) => Finding::Note(
            "retrieval is full text only (memory.embedder = \"none\"): drafts match your knowledge by its words. For retrieval by meaning, set memory.embedder = \"openai/text-embedding-3-small\" (or any configured OpenAI-compatible provider's embedding model, with a price), or \"local\" in a build with the local-embed feature, and ingest again".into(),
        ),
        Ok(embed::EmbedderChoice::Remote(model)) => Finding::Ok(format!(
            "retrieval fuses full text with {model} embeddings (reciprocal rank fusion)"
        )),
        Ok(embed::EmbedderChoice::Local(dir)) => Finding::Ok(format!(
            "retrieval fuses full text with all-MiniLM-L6-v2 embeddings made in process (model files in {})",
            dir.display()
        )),
        Err(problem) => Finding::Problem(
            problem,
            "fix memory.embedder, or set it to \"none\" (full-text retrieval)".into(),
        ),
    }
}

/// Hex SHA-256 of `text`: what tells an unchanged source from a changed one.
pub fn content_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a source is shown: a path's file name, a URL or note as it is.
pub fn label(name: &str) -> &str {
    if name.contains("://") {
        return name;
    }
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}
