//! Batches: a non-urgent call is queued with its worst case reserved at
//! the batch price, and the batcher sends queued calls together through
//! OpenAI's Batch API (`/files`, `/batches`) and finishes each item when its
//! batch comes back. rig-core has no batch client, so this is plain HTTP
//! with reqwest; the JSON is OpenAI's documented wire format.
//!
//! Creating a batch is paid for, so it happens once: the intent (a
//! submission id) is stored before the provider is asked, the batch's
//! metadata carries it, and a submission found unfinished after a crash is
//! looked up at the provider before anything is created again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Agents, Attempt, ModelCall, ModelError, scaled_max_tokens};
use crate::config::{ModelRef, ModelsSettings, ProviderKind, ProviderSettings};
use crate::domain::RunId;
use crate::store::{BatchItem, BatchOutcome, LedgerEntry, NewBatchItem, Store, StoreError, now_ms};

/// The batch metadata key that carries our submission id.
const SUBMISSION_KEY: &str = "soloist_submission";

/// Pages of `GET /batches` read when looking for a submission (100 each):
/// the batch was created moments before the crash, so it is among the
/// newest.
const LOOKUP_PAGES: usize = 5;

impl Agents {
    /// Prepares a non-urgent call for the next batch: the tier's first
    /// model, when its provider has a batch API (OpenAI kind), with its
    /// worst case reserved at the batch price. None means: no batch API
    /// here, call it now. The item holds its reservation: dropped without
    /// being committed (its step lost the run), it gives it back.
    pub async fn queue_for_batch(
        &self,
        call: &ModelCall,
        step: &str,
    ) -> Result<Option<NewBatchItem>, ModelError> {
        let settings = &self.inner.settings;
        let policy = settings.policy(call.label);
        let tier = call.tier.min(policy.tier_cap);
        let Some(model) = settings.usable_chain(tier).into_iter().next() else {
            return Err(ModelError::NotConfigured);
        };
        if settings.providers[&model.provider].kind != ProviderKind::Openai {
            return Ok(None);
        }
        let max_tokens = scaled_max_tokens(call, &policy);
        let attempt = Attempt::new(call, &model, tier, max_tokens);
        let reservation = match self
            .reserve_at(&attempt, settings.batch.price_factor)
            .await?
        {
            Ok(reservation) => reservation,
            Err(refusal) => {
                self.record(&attempt, "blocked", None, Duration::ZERO)
                    .await?;
                return Err(ModelError::Blocked(refusal));
            }
        };
        let mut request = json!({
            "model": model.model,
            "messages": [
                {"role": "system", "content": call.system},
                {"role": "user", "content": call.prompt},
            ],
            "max_tokens": max_tokens,
        });
        if let Some(temperature) = call.temperature {
            request["temperature"] = json!(temperature);
        }
        Ok(Some(NewBatchItem {
            id: uuid::Uuid::new_v4().simple().to_string(),
            step: step.to_string(),
            flow: call.flow.clone().unwrap_or_default(),
            provider: model.provider.clone(),
            model: model.model.clone(),
            tier: tier.as_str().to_string(),
            request,
            reservation,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the batch API of provider {provider} failed: {detail}")]
    Provider { provider: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One request to the batch API may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

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
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Finishes submissions a crash interrupted, sends every queue that is
    /// due (all of them when `force`), collects every batch that came back,
    /// and returns the runs that can go on.
    pub async fn tick(&self, force: bool) -> Result<Vec<RunId>, BatchError> {
        let mut woken = Vec::new();
        for (name, provider) in self.batch_providers() {
            let (started, fresh): (Vec<_>, Vec<_>) = self
                .store
                .queued_batch_items(name)
                .await?
                .into_iter()
                .partition(|item| item.submission_id.is_some());
            self.resume_submissions(name, provider, started, force)
                .await?;
            if self.is_due(&fresh, force) {
                self.submit(name, provider, &fresh).await?;
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

    /// Records the intent to send `items` (those no other process
    /// claimed first), then sends them.
    async fn submit(
        &self,
        name: &str,
        provider: &ProviderSettings,
        items: &[BatchItem],
    ) -> Result<(), BatchError> {
        let submission = uuid::Uuid::new_v4().simple().to_string();
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        let claimed = self.store.begin_batch_submission(&ids, &submission).await?;
        let items: Vec<BatchItem> = items
            .iter()
            .filter(|i| claimed.contains(&i.id))
            .cloned()
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        self.create(name, provider, &submission, &items).await
    }

    /// Submissions whose intent was stored but whose batch was never marked
    /// (a crash, or a failed request, between the two): adopt the batch the
    /// provider has for them, or create it if it never got there. A
    /// submission younger than a request's timeout may still be in flight
    /// in another process; it is left alone unless `force`.
    async fn resume_submissions(
        &self,
        name: &str,
        provider: &ProviderSettings,
        started: Vec<BatchItem>,
        force: bool,
    ) -> Result<(), BatchError> {
        let mut by_submission: BTreeMap<String, Vec<BatchItem>> = BTreeMap::new();
        for item in started {
            by_submission
                .entry(item.submission_id.clone().unwrap_or_default())
                .or_default()
                .push(item);
        }
        let settled_after = REQUEST_TIMEOUT.as_millis() as i64 * 2;
        for (submission, items) in by_submission {
            let started_at = items
                .iter()
                .filter_map(|i| i.submission_started_at)
                .max()
                .unwrap_or(0);
            if !force && now_ms() - started_at < settled_after {
                continue;
            }
            match self.find_batch(name, provider, &submission).await? {
                Some(batch_id) => {
                    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
                    self.store.mark_batch_submitted(&ids, &batch_id).await?;
                    tracing::warn!(provider = name, batch = %batch_id, %submission, "adopted a batch created before a crash");
                }
                None => self.create(name, provider, &submission, &items).await?,
            }
        }
        Ok(())
    }

    /// The provider's batch whose metadata carries `submission`, if any.
    async fn find_batch(
        &self,
        name: &str,
        provider: &ProviderSettings,
        submission: &str,
    ) -> Result<Option<String>, BatchError> {
        let mut after: Option<String> = None;
        for _ in 0..LOOKUP_PAGES {
            let mut url = format!("{}/batches?limit=100", base(provider));
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let page = self
                .send(name, self.authorised(provider, self.http.get(url)))
                .await?;
            let batches = page["data"].as_array().cloned().unwrap_or_default();
            if let Some(found) = batches
                .iter()
                .find(|b| b["metadata"][SUBMISSION_KEY].as_str() == Some(submission))
            {
                return Ok(Some(string_field(found, "id", name)?));
            }
            let last = batches.last().and_then(|b| b["id"].as_str());
            match (page["has_more"].as_bool(), last) {
                (Some(true), Some(last)) => after = Some(last.to_string()),
                _ => break,
            }
        }
        Ok(None)
    }

    /// Uploads the items as a JSONL file and starts a batch over it,
    /// labelled with the submission id.
    async fn create(
        &self,
        name: &str,
        provider: &ProviderSettings,
        submission: &str,
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
        let body = json!({
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {SUBMISSION_KEY: submission},
        });
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
                    crate::domain::clip(&crate::config::redact_urls_in(&body), 160)
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
