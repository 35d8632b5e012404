//! A fake Telegram Bot API on port 0 that behaves like the real one where
//! soloist depends on it: `/bot<token>/<method>` with case-insensitive
//! method names and JSON, form or multipart parameters; the `{ok, result}`
//! and `{ok: false, error_code, description, parameters: {retry_after}}`
//! envelopes; `getUpdates` long polling where asking for an `offset`
//! confirms every earlier update; webhooks (pushed with the secret token
//! header, retried until answered 200); messages as Telegram renders them
//! (parse modes, length limits, edits that drop the keyboard unless one is
//! given); callback queries answerable once; and, when asked, Telegram's
//! flood limits enforced with 429.
//!
//! The test injects what users do (`user_says`, `press`, …) and reads what
//! the bot did (`inspect`, `wait_for`). Shared with `benches/telegram.rs`.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Path, Request, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

pub const BOT_ID: i64 = 999_000;

/// What the bot sent, as the chat shows it now.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: i64,
    pub chat_id: i64,
    /// The text as rendered (after the parse mode, if any).
    pub text: Option<String>,
    pub caption: Option<String>,
    /// `inline_keyboard` rows, while the message has them.
    pub keyboard: Option<Value>,
    pub photo: Option<Vec<u8>>,
    pub document: Option<(String, Vec<u8>)>,
    pub edits: u32,
    pub sent_at: Instant,
}

impl Sent {
    /// Every callback data on the message's buttons, by label.
    pub fn button(&self, label: &str) -> Option<String> {
        self.keyboard
            .as_ref()?
            .as_array()?
            .iter()
            // Borrowed, not cloned: the burst bench asks this of every sent
            // message every few milliseconds, in soloist's own process.
            .flat_map(|row| row.as_array().map(Vec::as_slice).unwrap_or_default())
            .find(|b| b["text"] == label)
            .and_then(|b| b["callback_data"].as_str().map(String::from))
    }

    /// What the operator reads: text, caption or attached text file.
    pub fn visible(&self) -> String {
        if let Some((_, bytes)) = &self.document {
            return String::from_utf8_lossy(bytes).into_owned();
        }
        self.text
            .clone()
            .or_else(|| self.caption.clone())
            .unwrap_or_default()
    }
}

/// A scripted answer for the next call of a method.
#[derive(Debug, Clone)]
pub enum Failure {
    /// 429 with `retry_after`.
    TooManyRequests(u32),
    /// 502 with an HTML page, as a proxy in front of Telegram gives.
    BadGateway,
    /// A Bot API refusal: this status code and description.
    Refused(u16, &'static str),
}

#[derive(Default)]
pub struct State {
    /// Every update ever injected, by id.
    pub updates: Vec<Value>,
    /// Updates served regardless of the offset (a lost confirmation).
    forced: VecDeque<Value>,
    next_update_id: i64,
    /// Updates below this id are confirmed and never served again.
    pub confirmed: i64,
    /// The `offset` of every `getUpdates` call.
    pub offsets: Vec<Option<i64>>,
    next_message_id: i64,
    pub sent: Vec<Sent>,
    /// Callback query id → the toast it was answered with.
    pub answers: Vec<(String, Option<String>)>,
    open_queries: HashSet<String>,
    pub chat_actions: Vec<(i64, String, Instant)>,
    pub commands: Vec<Value>,
    /// The `scope` of each `setMyCommands` call (null: the default scope).
    pub command_scopes: Vec<Value>,
    /// (url, secret) once setWebhook was called.
    pub webhook: Option<(String, String)>,
    /// HTTP statuses the webhook answered.
    pub webhook_statuses: Vec<u16>,
    script: HashMap<String, VecDeque<Failure>>,
    limits: Option<(Duration, usize)>,
    last_to_chat: HashMap<i64, Instant>,
    recent: VecDeque<Instant>,
    /// 429s given for exceeding the enforced limits.
    pub too_many_requests: u64,
    /// Method names called, lower case, in order.
    pub calls: Vec<String>,
    /// `getUpdates` calls open right now, and how many began while
    /// another was open (Telegram answers the older one 409 Conflict:
    /// two pollers of one bot steal each other's updates).
    polls_open: usize,
    pub overlapping_polls: u64,
    /// (chat, message id) of every message deleted with `deleteMessage`.
    pub deleted: Vec<(i64, i64)>,
}

/// Closes a `getUpdates` call in the count of open ones, however it ends.
struct PollOpen(Arc<Mutex<State>>);

impl Drop for PollOpen {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.lock() {
            state.polls_open -= 1;
        }
    }
}

impl State {
    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.sent
            .iter()
            .filter(|s| s.chat_id == chat)
            .cloned()
            .collect()
    }
}

#[derive(Clone)]
pub struct FakeTelegram {
    /// What `telegram.api_url` should be.
    pub api_url: String,
    pub token: String,
    state: Arc<Mutex<State>>,
    news: Arc<Notify>,
}

#[derive(Clone)]
struct Shared {
    token: String,
    state: Arc<Mutex<State>>,
    news: Arc<Notify>,
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let token = format!("{BOT_ID}:AAF-fake-{}", uuid::Uuid::new_v4().simple());
        let state = Arc::new(Mutex::new(State {
            next_update_id: 700_000_001,
            confirmed: 0,
            next_message_id: 1,
            ..State::default()
        }));
        let news = Arc::new(Notify::new());
        let shared = Shared {
            token: token.clone(),
            state: state.clone(),
            news: news.clone(),
        };
        let app = Router::new()
            .route("/{bot}/{method}", axum::routing::any(api))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeTelegram {
            api_url: format!("http://{address}"),
            token,
            state,
            news,
        }
    }

    /// Looks at everything the fake knows.
    pub fn inspect<T>(&self, look: impl FnOnce(&State) -> T) -> T {
        look(&self.state.lock().unwrap())
    }

    /// Polls `look` until it gives something (panics after `secs`).
    pub async fn wait_for<T>(
        &self,
        secs: u64,
        what: &str,
        look: impl Fn(&State) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(found) = self.inspect(&look) {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next call of `method` fails like this (once per call).
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.state
            .lock()
            .unwrap()
            .script
            .entry(method.to_ascii_lowercase())
            .or_default()
            .push_back(failure);
    }

    /// Enforce Telegram's flood limits: at most one message per `per_chat`
    /// to a chat and `per_second` in all, else 429.
    pub fn enforce_limits(&self, per_chat: Duration, per_second: usize) {
        self.state.lock().unwrap().limits = Some((per_chat, per_second));
    }

    /// Queues an update of `kind` ("message", "callback_query", …).
    pub fn inject(&self, kind: &str, payload: Value) -> i64 {
        let update = {
            let mut state = self.state.lock().unwrap();
            let id = state.next_update_id;
            state.next_update_id += 1;
            let update = json!({"update_id": id, kind: payload});
            state.updates.push(update.clone());
            update
        };
        self.news.notify_waiters();
        self.push_to_webhook(update.clone());
        update["update_id"].as_i64().unwrap()
    }

    /// Serves an update again though it was confirmed, as Telegram does
    /// when it never saw the confirmation.
    pub fn deliver_again(&self, update_id: i64) {
        let update = {
            let mut state = self.state.lock().unwrap();
            let update = state
                .updates
                .iter()
                .find(|u| u["update_id"] == update_id)
                .cloned()
                .expect("a known update");
            state.forced.push_back(update.clone());
            update
        };
        self.news.notify_waiters();
        self.push_to_webhook(update);
    }

    /// A user's text message in a private chat (chat id = user id).
    pub fn user_says(&self, user: i64, text: &str) -> i64 {
        self.inject("message", user_message(user, user, json!({"text": text})))
    }

    /// A user's text message in `chat` (a group when negative).
    pub fn user_says_in(&self, chat: i64, user: i64, text: &str) -> i64 {
        self.inject("message", user_message(chat, user, json!({"text": text})))
    }

    /// A user's message with extra fields (photo, caption, sticker, …).
    pub fn user_sends(&self, user: i64, fields: Value) -> i64 {
        self.inject("message", user_message(user, user, fields))
    }

    /// A user taps a button on the bot's message; returns (update id,
    /// callback query id).
    pub fn press(&self, user: i64, on: &Sent, data: &str) -> (i64, String) {
        let query_id = format!("cq-{}", uuid::Uuid::new_v4().simple());
        self.state
            .lock()
            .unwrap()
            .open_queries
            .insert(query_id.clone());
        let update = self.inject(
            "callback_query",
            json!({
                "id": query_id,
                "from": user_json(user),
                "message": message_json(on),
                "chat_instance": "ci-1",
                "data": data,
            }),
        );
        (update, query_id)
    }

    fn push_to_webhook(&self, update: Value) {
        let Some((url, secret)) = self.state.lock().unwrap().webhook.clone() else {
            return;
        };
        let state = self.state.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..50 {
                let answer = client
                    .post(&url)
                    .header("X-Telegram-Bot-Api-Secret-Token", &secret)
                    .json(&update)
                    .send()
                    .await;
                let status = answer.map(|a| a.status().as_u16()).unwrap_or(0);
                state.lock().unwrap().webhook_statuses.push(status);
                if status == 200 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

pub fn user_json(user: i64) -> Value {
    json!({"id": user, "is_bot": false, "first_name": "Maya", "last_name": format!("{user}")})
}

pub fn user_message(chat: i64, user: i64, fields: Value) -> Value {
    let mut message = json!({
        "message_id": 1,
        "date": 1_760_000_000,
        "chat": chat_json(chat),
        "from": user_json(user),
    });
    for (key, value) in fields.as_object().expect("an object") {
        message[key] = value.clone();
    }
    if let Some(text) = message["text"].as_str().filter(|t| t.starts_with('/')) {
        let length = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .encode_utf16()
            .count();
        message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": length}]);
    }
    message
}

fn chat_json(chat: i64) -> Value {
    if chat < 0 {
        json!({"id": chat, "type": "group", "title": "Studio team"})
    } else {
        json!({"id": chat, "type": "private", "first_name": "Maya"})
    }
}

fn message_json(sent: &Sent) -> Value {
    let mut message = json!({
        "message_id": sent.message_id,
        "date": 1_760_000_000,
        "chat": chat_json(sent.chat_id),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Soloist", "username": "soloist_test_bot"},
    });
    if let Some(text) = &sent.text {
        message["text"] = json!(text);
    }
    if let Some(caption) = &sent.caption {
        message["caption"] = json!(caption);
    }
    if let Some(photo) = &sent.photo {
        message["photo"] = json!([{"file_id": "p", "file_unique_id": "pu", "width": 1, "height": 1, "file_size": photo.len()}]);
    }
    if let Some((name, bytes)) = &sent.document {
        message["document"] = json!({"file_id": "d", "file_unique_id": "du", "file_name": name, "file_size": bytes.len()});
    }
    if let Some(keyboard) = &sent.keyboard {
        message["reply_markup"] = json!({"inline_keyboard": keyboard});
    }
    message
}

/// Parameters of one call, however they were sent.
#[derive(Default)]
struct Params {
    fields: serde_json::Map<String, Value>,
    files: HashMap<String, (String, Vec<u8>)>,
}

impl Params {
    fn str(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn i64(&self, key: &str) -> Option<i64> {
        self.str(key)?.parse().ok()
    }

    /// An uploaded file: the part named `key`, or the part its value names
    /// as `attach://<part>` (as teloxide sends them).
    fn file(&self, key: &str) -> Option<&(String, Vec<u8>)> {
        let attached = self
            .str(key)
            .and_then(|v| v.strip_prefix("attach://").map(String::from));
        self.files
            .get(key)
            .or_else(|| self.files.get(attached.as_deref()?))
    }

    /// A JSON-serialized parameter (reply_markup), sent as an object or
    /// as a string holding JSON.
    fn json(&self, key: &str) -> Option<Value> {
        match self.fields.get(key)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            Value::Null => None,
            other => Some(other.clone()),
        }
    }
}

async fn read_params(request: Request) -> Result<Params, String> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let mut params = Params::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        params.fields.insert(key.into_owned(), json!(value));
    }
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| e.to_string())?;
        while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or("").to_string();
            match field.file_name().map(String::from) {
                Some(file_name) => {
                    let bytes = field.bytes().await.map_err(|e| e.to_string())?;
                    params.files.insert(name, (file_name, bytes.to_vec()));
                }
                None => {
                    let text = field.text().await.map_err(|e| e.to_string())?;
                    params.fields.insert(name, json!(text));
                }
            }
        }
        return Ok(params);
    }
    let body = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .map_err(|e| e.to_string())?;
    if content_type.starts_with("application/json") && !body.is_empty() {
        let value: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        params
            .fields
            .extend(value.as_object().cloned().unwrap_or_default());
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        for (key, value) in url::form_urlencoded::parse(&body) {
            params.fields.insert(key.into_owned(), json!(value));
        }
    }
    Ok(params)
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn error(code: u16, description: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        Json(json!({"ok": false, "error_code": code, "description": description})),
    )
        .into_response()
}

fn too_many(retry_after: u32) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "ok": false,
            "error_code": 429,
            "description": format!("Too Many Requests: retry after {retry_after}"),
            "parameters": {"retry_after": retry_after},
        })),
    )
        .into_response()
}

async fn api(
    AxumState(shared): AxumState<Shared>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    if bot != format!("bot{}", shared.token) {
        return error(401, "Unauthorized");
    }
    let method = method.to_ascii_lowercase();
    let params = match read_params(request).await {
        Ok(params) => params,
        Err(e) => return error(400, &format!("Bad Request: {e}")),
    };
    let scripted = {
        let mut state = shared.state.lock().unwrap();
        state.calls.push(method.clone());
        state.script.get_mut(&method).and_then(VecDeque::pop_front)
    };
    match scripted {
        Some(Failure::TooManyRequests(secs)) => return too_many(secs),
        Some(Failure::Refused(code, description)) => return error(code, description),
        Some(Failure::BadGateway) => {
            return (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response();
        }
        None => {}
    }
    match method.as_str() {
        "getupdates" => get_updates(&shared, &params).await,
        _ => {
            let mut state = shared.state.lock().unwrap();
            call(&mut state, &method, &params)
        }
    }
}

async fn get_updates(shared: &Shared, params: &Params) -> Response {
    let offset = params.i64("offset");
    let timeout = params.i64("timeout").unwrap_or(0).clamp(0, 50) as u64;
    let limit = params.i64("limit").unwrap_or(100).clamp(1, 100) as usize;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    {
        let mut state = shared.state.lock().unwrap();
        if state.webhook.is_some() {
            return error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
            );
        }
        state.offsets.push(offset);
        if state.polls_open > 0 {
            state.overlapping_polls += 1;
        }
        state.polls_open += 1;
        if let Some(offset) = offset {
            state.confirmed = state.confirmed.max(offset);
        }
    }
    let _open = PollOpen(shared.state.clone());
    loop {
        let news = shared.news.notified();
        {
            let mut state = shared.state.lock().unwrap();
            let mut batch: Vec<Value> = state.forced.drain(..).collect();
            let confirmed = state.confirmed;
            batch.extend(
                state
                    .updates
                    .iter()
                    .filter(|u| u["update_id"].as_i64().unwrap() >= confirmed)
                    .cloned(),
            );
            batch.truncate(limit);
            if !batch.is_empty() || Instant::now() >= deadline {
                return ok(Value::Array(batch));
            }
        }
        let _ = tokio::time::timeout_at(deadline, news).await;
    }
}

/// Every method but getUpdates, under the state lock.
fn call(state: &mut State, method: &str, params: &Params) -> Response {
    match method {
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Soloist", "username": "soloist_test_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false, "has_main_web_app": false,
        })),
        "setmycommands" => {
            let commands = params.json("commands").unwrap_or_default();
            let valid = commands.as_array().is_some_and(|list| {
                list.iter().all(|c| {
                    let name = c["command"].as_str().unwrap_or("");
                    let description = c["description"].as_str().unwrap_or("");
                    (1..=32).contains(&name.len())
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                        && (1..=256).contains(&description.chars().count())
                })
            });
            if !valid {
                return error(400, "Bad Request: BOT_COMMAND_INVALID");
            }
            state.commands = commands.as_array().cloned().unwrap_or_default();
            state
                .command_scopes
                .push(params.json("scope").unwrap_or(Value::Null));
            ok(json!(true))
        }
        "deletewebhook" => {
            state.webhook = None;
            ok(json!(true))
        }
        "setwebhook" => {
            let url = params.str("url").unwrap_or_default();
            let secret = params.str("secret_token").unwrap_or_default();
            state.webhook = Some((url, secret));
            ok(json!(true))
        }
        "sendchataction" => {
            let chat = params.i64("chat_id").unwrap_or(0);
            let action = params.str("action").unwrap_or_default();
            state.chat_actions.push((chat, action, Instant::now()));
            ok(json!(true))
        }
        "answercallbackquery" => {
            let id = params.str("callback_query_id").unwrap_or_default();
            if !state.open_queries.remove(&id) {
                return error(
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID is invalid",
                );
            }
            state.answers.push((id, params.str("text")));
            ok(json!(true))
        }
        "sendmessage"
        | "sendphoto"
        | "senddocument"
        | "editmessagetext"
        | "editmessagereplymarkup" => {
            let chat = params.i64("chat_id").unwrap_or(0);
            if let Some(refused) = flood_check(state, chat) {
                return refused;
            }
            match send_or_edit(state, method, params, chat) {
                Ok(sent) => ok(message_json(&sent)),
                Err(description) => error(400, &description),
            }
        }
        // Deletes a message the bot sent (Telegram lets a bot delete its
        // own messages for 48 hours; a test scripts the refusal after that
        // with `fail_next("deletemessage", …)`).
        "deletemessage" => {
            let chat = params.i64("chat_id").unwrap_or(0);
            let id = params.i64("message_id").unwrap_or(0);
            match state
                .sent
                .iter()
                .position(|s| s.chat_id == chat && s.message_id == id)
            {
                Some(at) => {
                    state.sent.remove(at);
                    state.deleted.push((chat, id));
                    ok(json!(true))
                }
                None => error(400, "Bad Request: message to delete not found"),
            }
        }
        _ => error(404, "Not Found"),
    }
}

fn flood_check(state: &mut State, chat: i64) -> Option<Response> {
    let (per_chat, per_second) = state.limits?;
    let now = Instant::now();
    while state
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        state.recent.pop_front();
    }
    let chat_busy = state
        .last_to_chat
        .get(&chat)
        .is_some_and(|t| now.duration_since(*t) < per_chat);
    if chat_busy || state.recent.len() >= per_second {
        state.too_many_requests += 1;
        return Some(too_many(1));
    }
    state.recent.push_back(now);
    state.last_to_chat.insert(chat, now);
    None
}

fn send_or_edit(
    state: &mut State,
    method: &str,
    params: &Params,
    chat: i64,
) -> Result<Sent, String> {
    let keyboard = match params.json("reply_markup") {
        Some(markup) => {
            let rows = markup["inline_keyboard"].clone();
            for button in rows
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r.as_array().cloned().unwrap_or_default())
            {
                let data = button["callback_data"].as_str().unwrap_or("");
                if data.is_empty() || data.len() > 64 {
                    return Err("Bad Request: BUTTON_DATA_INVALID".into());
                }
            }
            Some(rows)
        }
        None => None,
    };
    let parse_mode = params.str("parse_mode");
    let text = match params.str("text") {
        Some(text) => Some(render_text(&text, parse_mode.as_deref(), 4096, "message")?),
        None => None,
    };
    if method.starts_with("edit") {
        let message_id = params.i64("message_id").unwrap_or(0);
        let sent = state
            .sent
            .iter_mut()
            .find(|s| s.chat_id == chat && s.message_id == message_id)
            .ok_or("Bad Request: message to edit not found")?;
        let new_text = if method == "editmessagetext" {
            Some(text.ok_or("Bad Request: message text is empty")?)
        } else {
            sent.text.clone()
        };
        if new_text == sent.text && keyboard == sent.keyboard {
            return Err("Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message".into());
        }
        sent.text = new_text;
        // Telegram drops the inline keyboard unless the edit repeats it.
        sent.keyboard = keyboard;
        sent.edits += 1;
        return Ok(sent.clone());
    }
    let caption = match params.str("caption") {
        Some(caption) => Some(render_text(
            &caption,
            parse_mode.as_deref(),
            1024,
            "caption",
        )?),
        None => None,
    };
    let mut sent = Sent {
        message_id: state.next_message_id,
        chat_id: chat,
        text: None,
        caption,
        keyboard,
        photo: None,
        document: None,
        edits: 0,
        sent_at: Instant::now(),
    };
    match method {
        "sendmessage" => sent.text = Some(text.ok_or("Bad Request: message text is empty")?),
        "sendphoto" => {
            let (_, bytes) = params
                .file("photo")
                .ok_or("Bad Request: there is no photo in the request")?;
            if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
                return Err("Bad Request: IMAGE_PROCESS_FAILED".into());
            }
            sent.photo = Some(bytes.clone());
        }
        _ => {
            let file = params
                .file("document")
                .ok_or("Bad Request: there is no document in the request")?;
            sent.document = Some(file.clone());
        }
    }
    state.next_message_id += 1;
    state.sent.push(sent.clone());
    Ok(sent)
}

/// What Telegram shows for `text` under `parse_mode`, or its refusal.
/// Telegram trims the text and counts its length in UTF-16 units.
fn render_text(
    text: &str,
    parse_mode: Option<&str>,
    limit: usize,
    what: &str,
) -> Result<String, String> {
    let rendered = match parse_mode {
        None => text.to_string(),
        Some("HTML") => render_html(text)?,
        Some("MarkdownV2") => render_markdown_v2(text)?,
        Some(other) => return Err(format!("Bad Request: unsupported parse_mode {other}")),
    };
    let rendered = rendered.trim().to_string();
    if rendered.is_empty() {
        return Err(format!("Bad Request: {what} text is empty"));
    }
    if rendered.encode_utf16().count() > limit {
        return Err(format!("Bad Request: {what} is too long"));
    }
    Ok(rendered)
}

fn render_html(text: &str) -> Result<String, String> {
    const TAGS: [&str; 10] = [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "s",
        "code",
        "pre",
        "a",
        "tg-spoiler",
    ];
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(['<', '&']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('&') {
            let entity = [
                ("&lt;", '<'),
                ("&gt;", '>'),
                ("&amp;", '&'),
                ("&quot;", '"'),
            ]
            .into_iter()
            .find(|(name, _)| rest.starts_with(name))
            .ok_or("Bad Request: can't parse entities: unsupported start tag or entity")?;
            out.push(entity.1);
            rest = &rest[entity.0.len()..];
        } else {
            let end = rest
                .find('>')
                .ok_or("Bad Request: can't parse entities: unclosed start tag")?;
            let name = rest[1..end]
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or("");
            if !TAGS.contains(&name) {
                return Err(format!(
                    "Bad Request: can't parse entities: unsupported start tag \"{name}\""
                ));
            }
            rest = &rest[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn render_markdown_v2(text: &str) -> Result<String, String> {
    const RESERVED: &str = "_*[]()~`>#+-=|{}.!";
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else if "*_~`|".contains(c) {
            // Formatting markers: shown as style, not characters.
        } else if RESERVED.contains(c) {
            return Err(format!(
                "Bad Request: can't parse entities: Character '{c}' is reserved and must be escaped with the preceding '\\'"
            ));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}
