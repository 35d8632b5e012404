//! A fake model server on port 0 speaking both wire protocols soloist uses:
//! OpenAI's `POST /v1/chat/completions` and Anthropic's `POST /v1/messages`,
//! with their real response JSON (including `usage`), plus `GET /v1/models`.
//! A script of behaviours (reply, HTTP error, 429 with retry-after, hang,
//! malformed JSON) says how the next calls go; every request body is
//! recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub enum Behavior {
    Reply {
        text: String,
        prompt_tokens: u64,
        completion_tokens: u64,
        cached_tokens: u64,
    },
    Status(u16, String),
    /// HTTP 429 with a `retry-after` header, in seconds.
    RateLimited(u64),
    Hang(Duration),
    Malformed,
    /// The reply, after a pause (to make calls overlap).
    Delayed(Duration, Box<Behavior>),
}

impl Behavior {
    pub fn reply(text: &str) -> Self {
        Behavior::Reply {
            text: text.into(),
            prompt_tokens: 321,
            completion_tokens: 54,
            cached_tokens: 0,
        }
    }
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Behavior>,
    fallback: Option<Behavior>,
    requests: Vec<Value>,
    /// Uploaded and produced files (batch input and output), by id.
    files: std::collections::HashMap<String, String>,
    /// Batches: id to output file id.
    batches: std::collections::HashMap<String, String>,
    /// Each batch's metadata, in creation order (for `GET /batches`).
    batch_metadata: Vec<(String, Value)>,
    /// The next batch creation answers only after this pause (the batch
    /// exists at once: a client that gives up meanwhile has still paid).
    batch_reply_delay: Option<Duration>,
    /// Calls to the batch endpoints, in order ("POST /files", …).
    batch_calls: Vec<String>,
    /// `POST /embeddings` bodies, in order (kept apart from `requests`,
    /// which counts chat calls).
    embedding_requests: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeLlm {
    pub base_url: String,
    shared: Arc<Mutex<Shared>>,
}

pub const DEFAULT_DRAFT: &str =
    "I cut the Website Audit price to EUR 900. Three days, twelve pages, one fix list.";

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        let shared = Arc::new(Mutex::new(Shared {
            fallback: Some(Behavior::reply(DEFAULT_DRAFT)),
            ..Shared::default()
        }));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/messages", post(messages))
            .route("/v1/files", post(upload_file))
            .route("/v1/files/{id}/content", get(file_content))
            .route("/v1/batches", post(create_batch).get(list_batches))
            .route("/v1/batches/{id}", get(batch_status))
            .route("/v1/models", get(models))
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeLlm {
            base_url: format!("http://{address}/v1"),
            shared,
        }
    }

    /// The next calls behave like this, in order; then the fallback.
    pub fn then(&self, behavior: Behavior) -> &Self {
        self.shared.lock().unwrap().script.push_back(behavior);
        self
    }

    /// Every call after the script behaves like this.
    pub fn always(&self, behavior: Behavior) {
        self.shared.lock().unwrap().fallback = Some(behavior);
    }

    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// The batch API calls made so far, in order.
    pub fn batch_calls(&self) -> Vec<String> {
        self.shared.lock().unwrap().batch_calls.clone()
    }

    /// The `response_format` (structured output) the `n`th request asked
    /// for, if any.
    pub fn response_format(&self, n: usize) -> Option<Value> {
        let requests = self.shared.lock().unwrap();
        requests
            .requests
            .get(n)
            .and_then(|r| r.get("response_format"))
            .cloned()
    }

    /// The next batch creation is answered only after `pause`.
    pub fn delay_next_batch_reply(&self, pause: Duration) {
        self.shared.lock().unwrap().batch_reply_delay = Some(pause);
    }

    /// How many batches were created (and paid for).
    pub fn batches_created(&self) -> usize {
        self.shared.lock().unwrap().batches.len()
    }

    pub fn calls(&self) -> usize {
        self.shared.lock().unwrap().requests.len()
    }

    /// How many `/embeddings` requests were made.
    pub fn embedding_calls(&self) -> usize {
        self.shared.lock().unwrap().embedding_requests.len()
    }

    /// Every text sent to `/embeddings`, in order.
    pub fn embedded_texts(&self) -> Vec<String> {
        let shared = self.shared.lock().unwrap();
        shared
            .embedding_requests
            .iter()
            .flat_map(|body| match &body["input"] {
                Value::String(one) => vec![one.clone()],
                Value::Array(many) => many
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

/// Width of the fake's vectors.
pub const EMBEDDING_DIMS: usize = 1024;

/// Words the fake embedder treats as one meaning, so a paraphrase with no
/// word in common still lands near its original (as a real model does).
const SAME_MEANING: &[&[&str]] = &[
    &[
        "refund",
        "refunds",
        "reimburse",
        "reimbursed",
        "reimbursement",
        "repay",
        "repaid",
    ],
    &["unhappy", "dissatisfied", "displeased", "disappointed"],
    &[
        "cancel",
        "cancels",
        "cancelled",
        "cancellation",
        "withdraw",
        "abandon",
    ],
    &["fortnight", "weeks", "week"],
];

/// A deterministic embedding: a hashed bag of words (a meaning group
/// counts as one word), L2-normalised.
pub fn fake_embedding(text: &str) -> Vec<f64> {
    let mut vector = vec![0f64; EMBEDDING_DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .map(str::to_lowercase)
    {
        let key = SAME_MEANING
            .iter()
            .find(|group| group.contains(&word.as_str()))
            .map_or(word.clone(), |group| group[0].to_string());
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        vector[(hash % EMBEDDING_DIMS as u64) as usize] += 1.0;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// OpenAI's embeddings API: `input` a string or a list of strings.
async fn embeddings(State(shared): State<Arc<Mutex<Shared>>>, Json(body): Json<Value>) -> Response {
    shared.lock().unwrap().embedding_requests.push(body.clone());
    let inputs: Vec<String> = match &body["input"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "'input' is required", "type": "invalid_request_error"}})),
            )
                .into_response();
        }
    };
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": fake_embedding(text)}))
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "fake"}]}),
    )
}

/// Records the request and takes the behaviour for it.
async fn next_behavior(shared: &Mutex<Shared>, body: &Value) -> Behavior {
    let behavior = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(body.clone());
        let next = shared.script.pop_front();
        next.or_else(|| shared.fallback.clone())
            .expect("a behaviour")
    };
    match behavior {
        Behavior::Delayed(pause, then) => {
            tokio::time::sleep(pause).await;
            *then
        }
        other => other,
    }
}

/// The answers both protocols share: errors, hangs, garbage.
async fn failure(behavior: Behavior) -> Response {
    match behavior {
        Behavior::Reply { .. } | Behavior::Delayed(..) => unreachable!("handled by the caller"),
        Behavior::Status(code, message) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": message, "type": "server_error", "code": null}})),
        )
            .into_response(),
        Behavior::RateLimited(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
            Json(json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}})),
        )
            .into_response(),
        Behavior::Hang(duration) => {
            tokio::time::sleep(duration).await;
            (StatusCode::GATEWAY_TIMEOUT, "too late").into_response()
        }
        Behavior::Malformed => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"id\": \"broken\", \"choices\": [",
        )
            .into_response(),
    }
}

/// Anthropic's Messages API.
async fn messages(State(shared): State<Arc<Mutex<Shared>>>, Json(body): Json<Value>) -> Response {
    let behavior = next_behavior(&shared, &body).await;
    let model = body["model"].as_str().unwrap_or("unknown").to_string();
    match behavior {
        Behavior::Reply {
            text,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        } => Json(json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": prompt_tokens - cached_tokens,
                "cache_read_input_tokens": cached_tokens,
                "cache_creation_input_tokens": 0,
                "output_tokens": completion_tokens
            }
        }))
        .into_response(),
        other => failure(other).await,
    }
}

/// OpenAI's Chat Completions API.
async fn chat_completions(
    State(shared): State<Arc<Mutex<Shared>>>,
    Json(body): Json<Value>,
) -> Response {
    let behavior = next_behavior(&shared, &body).await;
    let model = body["model"].as_str().unwrap_or("unknown").to_string();
    match behavior {
        Behavior::Reply {
            text,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        } => Json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens}
            }
        }))
        .into_response(),
        other => failure(other).await,
    }
}

/// `POST /v1/files` (multipart: purpose, file).
async fn upload_file(
    State(shared): State<Arc<Mutex<Shared>>>,
    mut form: axum::extract::Multipart,
) -> Json<Value> {
    let mut content = String::new();
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("file") {
            content = field.text().await.unwrap();
        }
    }
    let mut shared = shared.lock().unwrap();
    let id = format!("file-{}", shared.files.len() + 1);
    shared.files.insert(id.clone(), content);
    shared.batch_calls.push("POST /files".into());
    Json(
        json!({"id": id, "object": "file", "purpose": "batch", "bytes": 0, "created_at": 0, "filename": "batch.jsonl"}),
    )
}

/// `POST /v1/batches`: runs every request of the input file through the
/// script at once, so the batch is complete when first asked about.
async fn create_batch(
    State(shared): State<Arc<Mutex<Shared>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let input_id = body["input_file_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let input = shared
        .lock()
        .unwrap()
        .files
        .get(&input_id)
        .cloned()
        .unwrap_or_default();
    let mut output = Vec::new();
    for line in input.lines() {
        let request: Value = serde_json::from_str(line).unwrap();
        let behavior = next_behavior(&shared, &request["body"]).await;
        let response = match behavior {
            Behavior::Reply {
                text,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => json!({
                "status_code": 200,
                "request_id": "req_fake",
                "body": {
                    "id": "chatcmpl-batch",
                    "object": "chat.completion",
                    "model": request["body"]["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                        "prompt_tokens_details": {"cached_tokens": cached_tokens}
                    }
                }
            }),
            _ => {
                json!({"status_code": 500, "request_id": "req_fake", "body": {"error": {"message": "batch item failed"}}})
            }
        };
        output.push(json!({"id": "batch_req", "custom_id": request["custom_id"], "response": response, "error": null}).to_string());
    }
    let (batch_id, delay) = {
        let mut shared = shared.lock().unwrap();
        let output_id = format!("file-{}", shared.files.len() + 1);
        shared.files.insert(output_id.clone(), output.join("\n"));
        let batch_id = format!("batch_{}", shared.batches.len() + 1);
        shared.batches.insert(batch_id.clone(), output_id);
        shared
            .batch_metadata
            .push((batch_id.clone(), body["metadata"].clone()));
        shared.batch_calls.push("POST /batches".into());
        (batch_id, shared.batch_reply_delay.take())
    };
    if let Some(pause) = delay {
        tokio::time::sleep(pause).await;
    }
    Json(
        json!({"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": input_id, "status": "validating", "completion_window": "24h"}),
    )
}

/// `GET /v1/batches?limit&after`: newest first, with their metadata.
async fn list_batches(
    State(shared): State<Arc<Mutex<Shared>>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let mut shared = shared.lock().unwrap();
    shared.batch_calls.push("GET /batches".into());
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20);
    let newest_first: Vec<&(String, Value)> = shared.batch_metadata.iter().rev().collect();
    let start = match query.get("after") {
        Some(after) => newest_first
            .iter()
            .position(|(id, _)| id == after)
            .map_or(newest_first.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = newest_first
        .iter()
        .skip(start)
        .take(limit)
        .map(|(id, metadata)| json!({"id": id, "object": "batch", "status": "in_progress", "metadata": metadata}))
        .collect();
    let has_more = start + page.len() < newest_first.len();
    Json(json!({"object": "list", "data": page, "has_more": has_more}))
}

/// `GET /v1/batches/{id}`.
async fn batch_status(
    State(shared): State<Arc<Mutex<Shared>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Json<Value> {
    let mut shared = shared.lock().unwrap();
    shared.batch_calls.push(format!("GET /batches/{id}"));
    let output = shared.batches.get(&id).cloned();
    Json(
        json!({"id": id, "object": "batch", "status": "completed", "output_file_id": output, "error_file_id": null}),
    )
}

/// `GET /v1/files/{id}/content`.
async fn file_content(
    State(shared): State<Arc<Mutex<Shared>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> String {
    shared
        .lock()
        .unwrap()
        .files
        .get(&id)
        .cloned()
        .unwrap_or_default()
}
