//! The batcher: sends queued non-urgent calls together through OpenAI's
//! Batch API (`/files`, `/batches`), at the batch price, and finishes each
//! item when its batch comes back. rig-core has no batch client, so this is
//! plain HTTP with reqwest; the JSON is OpenAI's documented wire format.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{ModelRef, ModelsSettings, ProviderKind, ProviderSettings};
use crate::domain::RunId;
use crate::store::{BatchItem, BatchOutcome, LedgerEntry, Store, StoreError, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the batch API of provider {provider} failed: {detail}")]
    Provider { provider: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Batcher {
    settings: ModelsSettings,
    store: Store,
    http: reqwest::Client,
}

impl Batcher {
    pub fn new(settings: ModelsSettings, store: Store) -> Self {
        Batcher {
            settings,
            store,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sends every queue that is due (all of them when `force`), collects
    /// every batch that came back, and returns the runs that can go on.
    pub async fn tick(&self, force: bool) -> Result<Vec<RunId>, BatchError> {
        let mut woken = Vec::new();
        for (name, provider) in self.batch_providers() {
            let queued = self.store.queued_batch_items(name).await?;
            if self.is_due(&queued, force) {
                self.submit(name, provider, &queued).await?;
            }
            woken.extend(self.collect(name, provider).await?);
        }
        Ok(woken)
    }

    /// How long until the batcher should look again.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.settings.batch.poll_secs.max(1))
    }

    fn batch_providers(&self) -> impl Iterator<Item = (&String, &ProviderSettings)> {
        self.settings
            .providers
            .iter()
            .filter(|(_, p)| p.kind == ProviderKind::Openai && p.is_configured())
    }

    fn is_due(&self, queued: &[BatchItem], force: bool) -> bool {
        let Some(oldest) = queued.first() else {
            return false;
        };
        let batch = &self.settings.batch;
        force
            || queued.len() >= batch.max_items as usize
            || now_ms() - oldest.created_at >= (batch.max_wait_secs * 1000) as i64
    }

    /// Uploads the items as a JSONL file and starts a batch over it.
    async fn submit(
        &self,
        name: &str,
        provider: &ProviderSettings,
        items: &[BatchItem],
    ) -> Result<(), BatchError> {
        let lines: Vec<String> = items
            .iter()
            .map(|item| {
                json!({"custom_id": item.id, "method": "POST", "url": "/v1/chat/completions", "body": item.request})
                    .to_string()
            })
            .collect();
        let file = reqwest::multipart::Part::bytes(lines.join("\n").into_bytes())
            .file_name("soloist-batch.jsonl");
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", file);
        let uploaded = self
            .send(name, self.post(provider, "files").multipart(form))
            .await?;
        let file_id = string_field(&uploaded, "id", name)?;
        let body = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
        let batch = self
            .send(name, self.post(provider, "batches").json(&body))
            .await?;
        let batch_id = string_field(&batch, "id", name)?;
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        self.store.mark_batch_submitted(&ids, &batch_id).await?;
        tracing::info!(provider = name, batch = %batch_id, items = ids.len(), "batch submitted");
        Ok(())
    }

    /// Checks each submitted batch; finishes the items of those that ended.
    async fn collect(
        &self,
        name: &str,
        provider: &ProviderSettings,
    ) -> Result<Vec<RunId>, BatchError> {
        let mut by_batch: BTreeMap<String, Vec<BatchItem>> = BTreeMap::new();
        for item in self.store.submitted_batch_items(name).await? {
            by_batch
                .entry(item.batch_id.clone().unwrap_or_default())
                .or_default()
                .push(item);
        }
        let mut woken = Vec::new();
        for (batch_id, items) in by_batch {
            let url = format!("{}/batches/{batch_id}", base(provider));
            let batch = self
                .send(name, self.authorised(provider, self.http.get(url)))
                .await?;
            let status = batch["status"].as_str().unwrap_or_default();
            let results = match status {
                "completed" => self.results(name, provider, &batch).await?,
                "failed" | "expired" | "cancelled" => BTreeMap::new(),
                _ => continue,
            };
            for item in items {
                let outcome = match results.get(&item.id) {
                    Some(Ok(body)) => self.outcome(&item, body),
                    Some(Err(error)) => BatchOutcome::Failed(error.clone()),
                    None => BatchOutcome::Failed(format!(
                        "the batch ended as {status} without this call"
                    )),
                };
                if self.store.finish_batch_item(&item, &outcome).await? {
                    woken.push(item.run_id);
                }
            }
        }
        Ok(woken)
    }

    /// The output and error files of a completed batch, by custom id: the
    /// response body, or why the call failed.
    async fn results(
        &self,
        name: &str,
        provider: &ProviderSettings,
        batch: &Value,
    ) -> Result<BTreeMap<String, Result<Value, String>>, BatchError> {
        let mut results = BTreeMap::new();
        for field in ["output_file_id", "error_file_id"] {
            let Some(file_id) = batch[field].as_str() else {
                continue;
            };
            let url = format!("{}/files/{file_id}/content", base(provider));
            let reply = self
                .authorised(provider, self.http.get(url))
                .send()
                .await
                .map_err(|e| provider_error(name, e))?;
            let text = reply.text().await.map_err(|e| provider_error(name, e))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(entry) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let id = entry["custom_id"].as_str().unwrap_or_default().to_string();
                let status = entry["response"]["status_code"].as_u64().unwrap_or(0);
                let result = if status == 200 {
                    Ok(entry["response"]["body"].clone())
                } else {
                    Err(format!(
                        "HTTP {status}: {}",
                        entry["error"]["message"]
                            .as_str()
                            .or(entry["response"]["body"]["error"]["message"].as_str())
                            .unwrap_or("no message")
                    ))
                };
                results.insert(id, result);
            }
        }
        Ok(results)
    }

    /// The step output and ledger row of a call that came back.
    fn outcome(&self, item: &BatchItem, body: &Value) -> BatchOutcome {
        let text = body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string();
        if text.is_empty() {
            return BatchOutcome::Failed("the model returned no text".into());
        }
        let usage = &body["usage"];
        let input = usage["prompt_tokens"].as_u64().unwrap_or(0);
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0);
        let output = usage["completion_tokens"].as_u64().unwrap_or(0);
        let model = ModelRef {
            provider: item.provider.clone(),
            model: item.model.clone(),
        };
        let full = self
            .settings
            .price(&model)
            .map(|p| p.cost(input, cached, output));
        let cost = full.map(|f| f * self.settings.batch.price_factor);
        let entry = LedgerEntry {
            run_id: Some(item.run_id),
            step: Some(item.step.clone()),
            flow: Some(item.flow.clone()),
            provider: item.provider.clone(),
            model: item.model.clone(),
            tier: item.tier.clone(),
            input_tokens: input as i64,
            cached_input_tokens: cached as i64,
            output_tokens: output as i64,
            cost_usd: cost,
            latency_ms: now_ms() - item.created_at,
            cache_hit: false,
            outcome: "ok".into(),
            batched: true,
            saved_usd: full.zip(cost).map_or(0.0, |(f, c)| f - c),
            redacted_items: 0,
        };
        BatchOutcome::Done {
            entry: Box::new(entry),
            output: json!({
                "text": text,
                "model": model.to_string(),
                "tier": item.tier,
                "input_tokens": input,
                "output_tokens": output,
                "cache_hit": false,
                "batched": true,
            }),
        }
    }

    fn post(&self, provider: &ProviderSettings, path: &str) -> reqwest::RequestBuilder {
        self.authorised(
            provider,
            self.http.post(format!("{}/{path}", base(provider))),
        )
    }

    fn authorised(
        &self,
        provider: &ProviderSettings,
        request: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        match provider.api_key.expose() {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn send(
        &self,
        name: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, BatchError> {
        let reply = request.send().await.map_err(|e| provider_error(name, e))?;
        let status = reply.status();
        let body = reply.text().await.map_err(|e| provider_error(name, e))?;
        if !status.is_success() {
            return Err(BatchError::Provider {
                provider: name.to_string(),
                detail: format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    crate::domain::clip(&body, 160)
                ),
            });
        }
        serde_json::from_str(&body).map_err(|e| BatchError::Provider {
            provider: name.to_string(),
            detail: format!("unreadable reply: {e}"),
        })
    }
}

fn base(provider: &ProviderSettings) -> &str {
    provider.endpoint().trim_end_matches('/')
}

fn string_field(value: &Value, field: &str, provider: &str) -> Result<String, BatchError> {
    value[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| BatchError::Provider {
            provider: provider.to_string(),
            detail: format!("the reply has no '{field}'"),
        })
}

/// reqwest's error, without its URL (a self-hosted endpoint's URL can carry
/// credentials).
fn provider_error(provider: &str, error: reqwest::Error) -> BatchError {
    BatchError::Provider {
        provider: provider.to_string(),
        detail: error.without_url().to_string(),
    }
}
