//! A fake Discord on port 0, speaking the real wire formats where soloist
//! depends on them.
//!
//! REST under `/api/v10`: `/oauth2/applications/@me`, `/gateway` and
//! `/gateway/bot`, slash-command bulk overwrite (global and guild), create
//! and edit message (JSON or multipart with files), interaction callbacks,
//! `@original` edit and delete, follow-ups, channel history (`GET
//! /channels/{id}/messages` with `after` and `limit`: the users' posts and
//! the bot's messages, as REST shows them, without `guild_id`). Bot routes
//! demand the bot token (401 otherwise); a test can script 429s (per route
//! or global), refuse or slow down a channel's history.
//!
//! The gateway at `/gateway` is a WebSocket speaking the real protocol:
//! HELLO, IDENTIFY → READY, heartbeats → ACK, RESUME → replay of the events
//! the client missed → RESUMED. Tests inject MESSAGE_CREATE and
//! INTERACTION_CREATE (slash commands and button presses) and read back the
//! messages as Discord would show them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const TOKEN: &str = "discord-test-token-not-real";
pub const APP_ID: &str = "900000000000000001";
pub const BOT_USER_ID: &str = "900000000000000002";
pub const GUILD_ID: &str = "900000000000000003";
/// Heartbeats every 500 ms, so tests see several.
const HEARTBEAT_MS: u64 = 500;

/// A Discord user the test acts as.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub id: &'static str,
    pub name: &'static str,
}

/// Where an event happens: a server channel or a DM with the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Guild,
    Dm,
}

/// A message as Discord holds it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: u64,
    pub channel: String,
    pub content: String,
    pub components: Value,
    pub flags: u64,
    pub files: Vec<(String, Vec<u8>)>,
    /// The request body that created or last edited it.
    pub allowed_mentions: Value,
    pub edits: u32,
}

impl Msg {
    pub fn is_ephemeral(&self) -> bool {
        self.flags & 64 != 0
    }

    pub fn buttons(&self) -> Vec<Value> {
        self.components
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The custom id of the button labelled `label`.
    pub fn custom_id(&self, label: &str) -> String {
        self.buttons()
            .iter()
            .find(|b| b["label"] == label)
            .and_then(|b| b["custom_id"].as_str())
            .unwrap_or_else(|| panic!("no '{label}' button on {self:#?}"))
            .to_string()
    }
}

/// An interaction the test started, and what the bot did with it.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: String,
    pub channel: String,
    pub dispatched_at: Instant,
    /// Callback type and flags, with when it arrived.
    pub callback: Option<(u64, u64, Instant)>,
    pub original: Option<u64>,
    pub original_deleted: bool,
    pub follow_ups: Vec<u64>,
}

/// One REST call as received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub route: String,
    pub status: u16,
    pub at: Instant,
}

/// A scripted 429: the next bot call whose route contains `route`.
#[derive(Debug, Clone)]
struct Limit {
    route: String,
    retry_after: f64,
    global: bool,
}

#[derive(Default)]
struct Gateway {
    session_id: Option<String>,
    seq: u64,
    /// Every dispatch of the session: what RESUME replays from.
    log: Vec<(u64, Value)>,
    /// The live connection: its number and a way to reach it.
    live: Option<(u64, mpsc::UnboundedSender<Control>)>,
    connections: u64,
    identifies: u32,
    resumes: u32,
    replayed: u32,
    heartbeats: u32,
    intents: Option<u64>,
    /// While set, the gateway URL answers 503 instead of a WebSocket: an
    /// outage the client cannot reconnect through.
    refusing: bool,
}

enum Control {
    Send(Value),
    Close(u16),
}

#[derive(Default)]
pub struct World {
    pub calls: Vec<Call>,
    pub messages: BTreeMap<u64, Msg>,
    pub interactions: HashMap<String, Interaction>,
    /// Bulk overwrites: the guild (None: global) and the commands.
    pub commands: Vec<(Option<String>, Value)>,
    limits: VecDeque<Limit>,
    gateway: Gateway,
    next_id: u64,
    /// DM channels opened by `POST /users/@me/channels`: user id to
    /// channel id (Discord returns the same channel when asked again).
    pub dm_channels: BTreeMap<String, String>,
    /// Ids of messages deleted with `DELETE /channels/{id}/messages/{id}`.
    pub deleted: Vec<u64>,
    /// Scripted answers for the next deletes: (status, code, message).
    delete_refusals: VecDeque<(u16, u64, &'static str)>,
    /// What users posted (their MESSAGE_CREATE payloads), by id: the
    /// channels' history besides the bot's own messages.
    posted: BTreeMap<u64, Value>,
    /// Channels whose history is refused, with the HTTP status.
    history_refusals: HashMap<String, u16>,
    /// How long a history read waits before it is answered.
    history_delay: Duration,
    /// The ids each history read answered with, in order of the reads.
    pub history_reads: Vec<(String, Vec<u64>)>,
}

impl World {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        1_000_000_000_000_000_000 + self.next_id
    }

    fn interaction_by_token(&mut self, token: &str) -> Option<&mut Interaction> {
        let id = token.strip_prefix("itoken-")?;
        self.interactions.get_mut(id)
    }

    /// Messages in a channel, oldest first.
    pub fn in_channel(&self, channel: &str) -> Vec<Msg> {
        self.messages
            .values()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    pub fn identifies(&self) -> u32 {
        self.gateway.identifies
    }

    pub fn resumes(&self) -> u32 {
        self.gateway.resumes
    }

    pub fn replayed(&self) -> u32 {
        self.gateway.replayed
    }

    pub fn heartbeats(&self) -> u32 {
        self.gateway.heartbeats
    }

    pub fn connected(&self) -> bool {
        self.gateway.live.is_some() && self.gateway.session_id.is_some()
    }

    pub fn intents(&self) -> Option<u64> {
        self.gateway.intents
    }
}

#[derive(Clone)]
pub struct FakeDiscord {
    pub api_url: String,
    world: Arc<Mutex<World>>,
}

type Shared = Arc<Mutex<World>>;

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let world: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let gateway_url = format!("ws://{address}/gateway");
        let api = Router::new()
            .route("/oauth2/applications/@me", get(application))
            .route("/users/@me", get(current_user))
            .route("/users/@me/channels", post(create_dm))
            .route("/gateway", get(gateway_info))
            .route("/gateway/bot", get(gateway_info))
            .route("/applications/{app}/commands", put(global_commands))
            .route(
                "/applications/{app}/guilds/{guild}/commands",
                put(guild_commands),
            )
            .route(
                "/channels/{channel}/messages",
                post(create_message).get(channel_history),
            )
            .route(
                "/channels/{channel}/messages/{id}",
                patch(edit_message).delete(delete_message),
            )
            .route("/interactions/{id}/{token}/callback", post(callback))
            .route("/webhooks/{app}/{token}", post(follow_up))
            .route(
                "/webhooks/{app}/{token}/messages/{message}",
                patch(edit_original).delete(delete_original),
            )
            .with_state((world.clone(), gateway_url));
        let app = Router::new()
            .nest("/api/v10", api)
            .route("/gateway", get(gateway_socket).with_state(world.clone()));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeDiscord {
            api_url: format!("http://{address}/api/v10"),
            world,
        }
    }

    /// The next message delete is refused with this status, JSON error
    /// code and message (e.g. 403, 50013, "Missing Permissions").
    pub fn refuse_next_delete(&self, status: u16, code: u64, message: &'static str) {
        self.world
            .lock()
            .unwrap()
            .delete_refusals
            .push_back((status, code, message));
    }

    /// Reads the world.
    pub fn see<T>(&self, look: impl FnOnce(&World) -> T) -> T {
        look(&self.world.lock().unwrap())
    }

    /// Waits (up to 15 s) until `ready` returns something.
    pub async fn wait_for<T>(&self, what: &str, ready: impl Fn(&World) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = self.see(&ready) {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next bot call whose route contains `route` gets a 429.
    pub fn rate_limit_next(&self, route: &str, retry_after: f64, global: bool) {
        self.world.lock().unwrap().limits.push_back(Limit {
            route: route.into(),
            retry_after,
            global,
        });
    }

    /// A user runs a slash command; returns the interaction's id.
    pub fn slash(
        &self,
        user: User,
        place: Place,
        channel: &str,
        name: &str,
        value: Option<&str>,
    ) -> String {
        let mut world = self.world.lock().unwrap();
        let id = world.id().to_string();
        let options: Vec<Value> = value
            .map(|v| {
                let option = if name == "draft" { "text" } else { "id" };
                json!({"name": option, "type": 3, "value": v})
            })
            .into_iter()
            .collect();
        let data = json!({"id": "800000000000000001", "name": name, "type": 1, "options": options});
        let payload = interaction_payload(&id, 2, data, user, place, channel, None);
        register(&mut world, &id, channel);
        dispatch(&mut world, "INTERACTION_CREATE", payload);
        id
    }

    /// A user presses the button `custom_id` on message `message`; returns
    /// the interaction's id.
    pub fn press(&self, user: User, place: Place, message: u64, custom_id: &str) -> String {
        let mut world = self.world.lock().unwrap();
        let id = world.id().to_string();
        let shown = world
            .messages
            .get(&message)
            .cloned()
            .expect("a message to press on");
        let data = json!({"custom_id": custom_id, "component_type": 2});
        let payload = interaction_payload(&id, 3, data, user, place, &shown.channel, Some(&shown));
        register(&mut world, &id, &shown.channel);
        dispatch(&mut world, "INTERACTION_CREATE", payload);
        id
    }

    /// A user posts a message; `mention` makes it start with the bot's
    /// mention. Returns the message id.
    pub fn post(&self, user: User, place: Place, channel: &str, text: &str, mention: bool) -> u64 {
        let mut world = self.world.lock().unwrap();
        let id = world.id();
        let payload = message_create(id, user, place, channel, text, mention);
        world.posted.insert(id, payload.clone());
        dispatch(&mut world, "MESSAGE_CREATE", payload);
        id
    }

    /// A user posts a message that reaches the channel's history but no
    /// gateway session (as while nobody holds the gateway). Returns its id.
    pub fn post_unseen(
        &self,
        user: User,
        place: Place,
        channel: &str,
        text: &str,
        mention: bool,
    ) -> u64 {
        let mut world = self.world.lock().unwrap();
        let id = world.id();
        let payload = message_create(id, user, place, channel, text, mention);
        world.posted.insert(id, payload);
        id
    }

    /// Reads of `channel`'s history are refused with `status` from now on.
    pub fn refuse_history(&self, channel: &str, status: u16) {
        self.world
            .lock()
            .unwrap()
            .history_refusals
            .insert(channel.to_string(), status);
    }

    /// History reads wait `delay` before they are answered (what they
    /// answer is read after the wait).
    pub fn slow_history(&self, delay: Duration) {
        self.world.lock().unwrap().history_delay = delay;
    }

    /// Drops the gateway connection and ends its session: the client's
    /// RESUME is answered with an invalid session, so it identifies anew
    /// and the events in between are never replayed.
    pub fn drop_connection_and_session(&self) {
        let live = {
            let mut world = self.world.lock().unwrap();
            world.gateway.session_id = None;
            world.gateway.live.take()
        };
        if let Some((_, connection)) = live {
            let _ = connection.send(Control::Close(4000));
        }
    }

    /// Drops the gateway connection (close code 4000, resumable) and, before
    /// the client can come back, dispatches `events` into the session:
    /// they reach the client only if it resumes.
    pub fn drop_connection_then(&self, events: impl FnOnce(&FakeDiscord)) {
        let live = self.world.lock().unwrap().gateway.live.take();
        // The events are logged before the client is told to go: closed
        // first, a client quick to resume (or a test thread descheduled
        // under load) could be live again before they were dispatched, and
        // get them live instead of by replay.
        events(self);
        if let Some((_, connection)) = live {
            let _ = connection.send(Control::Close(4000));
        }
    }

    /// Drops the gateway connection and refuses new ones until
    /// [`FakeDiscord::restore_gateway`]: an outage, not a blip.
    pub fn take_gateway_down(&self) {
        let live = {
            let mut world = self.world.lock().unwrap();
            world.gateway.refusing = true;
            world.gateway.live.take()
        };
        if let Some((_, connection)) = live {
            let _ = connection.send(Control::Close(4000));
        }
    }

    pub fn restore_gateway(&self) {
        self.world.lock().unwrap().gateway.refusing = false;
    }

    /// The interaction `id` as the bot has answered it so far.
    pub fn interaction(&self, id: &str) -> Interaction {
        self.see(|w| w.interactions[id].clone())
    }

    pub fn message(&self, id: u64) -> Msg {
        self.see(|w| w.messages[&id].clone())
    }

    /// The deferred response of interaction `id` once filled.
    pub async fn original_of(&self, id: &str) -> Msg {
        let message = self
            .wait_for("the interaction's response", |w| {
                w.interactions[id].original
            })
            .await;
        self.message(message)
    }

    /// The first follow-up of interaction `id` once sent.
    pub async fn follow_up_of(&self, id: &str) -> Msg {
        let message = self
            .wait_for("a follow-up", |w| {
                w.interactions[id].follow_ups.first().copied()
            })
            .await;
        self.message(message)
    }

    /// Successful bot calls of one method whose route contains `route`.
    pub fn calls(&self, method: &str, route: &str) -> Vec<Call> {
        self.see(|w| {
            w.calls
                .iter()
                .filter(|c| c.method == method && c.route.contains(route))
                .cloned()
                .collect()
        })
    }
}

fn register(world: &mut World, id: &str, channel: &str) {
    world.interactions.insert(
        id.to_string(),
        Interaction {
            id: id.to_string(),
            channel: channel.to_string(),
            dispatched_at: Instant::now(),
            callback: None,
            original: None,
            original_deleted: false,
            follow_ups: Vec::new(),
        },
    );
}

/// Sends a dispatch on the live connection, or keeps it in the session's
/// log for a RESUME when there is none.
fn dispatch(world: &mut World, kind: &str, data: Value) {
    let gateway = &mut world.gateway;
    gateway.seq += 1;
    let event = json!({"op": 0, "t": kind, "s": gateway.seq, "d": data});
    gateway.log.push((gateway.seq, event.clone()));
    if let Some((_, connection)) = &gateway.live {
        let _ = connection.send(Control::Send(event));
    }
}

pub fn user_json(user: User) -> Value {
    json!({
        "id": user.id,
        "username": user.name.to_lowercase().replace(' ', "_"),
        "global_name": user.name,
        "discriminator": "0",
        "avatar": null,
        "bot": user.id == BOT_USER_ID,
    })
}

fn bot() -> User {
    User {
        id: BOT_USER_ID,
        name: "soloist",
    }
}

fn member_json(user: User) -> Value {
    json!({
        "user": user_json(user),
        "roles": [],
        "joined_at": "2025-01-01T00:00:00.000000+00:00",
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "permissions": "2248473465835073",
        "avatar": null,
        "communication_disabled_until": null,
    })
}

fn interaction_payload(
    id: &str,
    kind: u64,
    data: Value,
    user: User,
    place: Place,
    channel: &str,
    message: Option<&Msg>,
) -> Value {
    let mut payload = json!({
        "id": id,
        "application_id": APP_ID,
        "type": kind,
        "data": data,
        "channel_id": channel,
        "token": format!("itoken-{id}"),
        "version": 1,
        "app_permissions": "2248473465835073",
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 10_485_760,
    });
    match place {
        Place::Guild => {
            payload["guild_id"] = json!(GUILD_ID);
            payload["guild_locale"] = json!("en-US");
            payload["member"] = member_json(user);
            payload["authorizing_integration_owners"] = json!({"0": GUILD_ID});
            payload["context"] = json!(0);
        }
        Place::Dm => {
            payload["user"] = user_json(user);
            payload["authorizing_integration_owners"] = json!({"0": GUILD_ID});
            payload["context"] = json!(1);
        }
    }
    if let Some(message) = message {
        payload["message"] = message_json(message);
    }
    payload
}

fn message_json(message: &Msg) -> Value {
    json!({
        "id": message.id.to_string(),
        "channel_id": message.channel,
        "author": user_json(bot()),
        "content": message.content,
        "timestamp": "2025-01-01T00:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "flags": message.flags,
        "components": message.components,
    })
}

fn message_create(
    id: u64,
    user: User,
    place: Place,
    channel: &str,
    text: &str,
    mention: bool,
) -> Value {
    let content = if mention {
        format!("<@{BOT_USER_ID}> {text}")
    } else {
        text.to_string()
    };
    let mut payload = json!({
        "id": id.to_string(),
        "channel_id": channel,
        "author": user_json(user),
        "content": content,
        "timestamp": "2025-01-01T00:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": if mention { vec![user_json(bot())] } else { vec![] },
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "flags": 0,
        "components": [],
    });
    if place == Place::Guild {
        payload["guild_id"] = json!(GUILD_ID);
        let mut member = member_json(user);
        member.as_object_mut().unwrap().remove("user");
        payload["member"] = member;
    }
    payload
}

// ---------------------------------------------------------------- REST --

type ApiState = (Shared, String);

fn discord_error(status: StatusCode, code: u64, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

/// Records the call; answers 401 without the bot token, 429 when scripted.
fn gate(world: &mut World, headers: &HeaderMap, method: &str, route: &str) -> Option<Response> {
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bot {TOKEN}").as_bytes());
    let (status, response) = if !authorized {
        let refused = discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
        (401, Some(refused))
    } else if let Some(limited) = scripted_limit(world, route) {
        (429, Some(limited))
    } else {
        (200, None)
    };
    world.calls.push(Call {
        method: method.into(),
        route: route.into(),
        status,
        at: Instant::now(),
    });
    response
}

/// The scripted 429 for `route`, if one is due.
fn scripted_limit(world: &mut World, route: &str) -> Option<Response> {
    let at = world.limits.iter().position(|l| route.contains(&l.route))?;
    let limit = world.limits.remove(at).unwrap();
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": limit.retry_after,
        "global": limit.global,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("retry-after", (limit.retry_after.ceil() as u64).into());
    let scope = if limit.global { "global" } else { "user" };
    headers.insert("x-ratelimit-scope", scope.parse().unwrap());
    if limit.global {
        headers.insert("x-ratelimit-global", "true".parse().unwrap());
    }
    Some(response)
}

/// Records an interaction-webhook call (no bot token; no global limit).
fn record(world: &mut World, method: &str, route: &str) {
    world.calls.push(Call {
        method: method.into(),
        route: route.into(),
        status: 200,
        at: Instant::now(),
    });
}

async fn application(State((world, _)): State<ApiState>, headers: HeaderMap) -> Response {
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(&mut world, &headers, "GET", "/oauth2/applications/@me") {
        return refused;
    }
    Json(json!({"id": APP_ID, "name": "soloist", "bot_public": false, "bot_require_code_grant": false, "flags": 0})).into_response()
}

async fn current_user(State((world, _)): State<ApiState>, headers: HeaderMap) -> Response {
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(&mut world, &headers, "GET", "/users/@me") {
        return refused;
    }
    Json(user_json(bot())).into_response()
}

/// `POST /users/@me/channels` with `{"recipient_id": …}`: the DM channel
/// object (type 1) with that user, the same one each time.
async fn create_dm(
    State((world, _)): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(&mut world, &headers, "POST", "/users/@me/channels") {
        return refused;
    }
    let Some(recipient) = body["recipient_id"].as_str().map(str::to_string) else {
        return discord_error(
            StatusCode::BAD_REQUEST,
            50035,
            "Invalid Form Body: recipient_id is required",
        );
    };
    let channel = match world.dm_channels.get(&recipient) {
        Some(channel) => channel.clone(),
        None => {
            let channel = world.id().to_string();
            world.dm_channels.insert(recipient.clone(), channel.clone());
            channel
        }
    };
    Json(json!({
        "id": channel,
        "type": 1,
        "last_message_id": null,
        "flags": 0,
        "recipients": [{
            "id": recipient,
            "username": "owner",
            "global_name": null,
            "discriminator": "0",
            "avatar": null,
        }],
    }))
    .into_response()
}

async fn gateway_info(State((world, url)): State<ApiState>, headers: HeaderMap) -> Response {
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(&mut world, &headers, "GET", "/gateway") {
        return refused;
    }
    Json(json!({
        "url": url,
        "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1},
    }))
    .into_response()
}

async fn global_commands(
    state: State<ApiState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    commands(state, app, None, headers, body)
}

async fn guild_commands(
    state: State<ApiState>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    commands(state, app, Some(guild), headers, body)
}

fn commands(
    State((world, _)): State<ApiState>,
    app: String,
    guild: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(&mut world, &headers, "PUT", "/commands") {
        return refused;
    }
    if app != APP_ID {
        return discord_error(StatusCode::FORBIDDEN, 20012, "wrong application");
    }
    world.commands.push((guild, body.clone()));
    Json(body).into_response()
}

/// The JSON payload and files of a JSON or multipart body.
async fn read_body(request: Request) -> (Value, Vec<(String, Vec<u8>)>) {
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let bytes = axum::body::to_bytes(request.into_body(), 10 << 20)
            .await
            .unwrap();
        return (
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Vec::new(),
        );
    }
    let mut form = Multipart::from_request(request, &()).await.unwrap();
    let mut payload = Value::Null;
    let mut files = Vec::new();
    while let Some(field) = form.next_field().await.unwrap() {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.unwrap().to_vec();
        if name == "payload_json" {
            payload = serde_json::from_slice(&bytes).unwrap();
        } else {
            files.push((file_name.unwrap_or(name), bytes));
        }
    }
    (payload, files)
}

fn new_message(
    world: &mut World,
    channel: &str,
    body: &Value,
    files: Vec<(String, Vec<u8>)>,
) -> Msg {
    let message = Msg {
        id: world.id(),
        channel: channel.to_string(),
        content: body["content"].as_str().unwrap_or_default().to_string(),
        components: body.get("components").cloned().unwrap_or(json!([])),
        flags: body["flags"].as_u64().unwrap_or(0),
        files,
        allowed_mentions: body["allowed_mentions"].clone(),
        edits: 0,
    };
    world.messages.insert(message.id, message.clone());
    message
}

fn apply_edit(message: &mut Msg, body: &Value, files: Vec<(String, Vec<u8>)>) {
    if let Some(content) = body["content"].as_str() {
        message.content = content.to_string();
    }
    if let Some(components) = body.get("components") {
        message.components = components.clone();
    }
    if !files.is_empty() {
        message.files = files;
    }
    if !body["allowed_mentions"].is_null() {
        message.allowed_mentions = body["allowed_mentions"].clone();
    }
    message.edits += 1;
}

fn message_response(message: &Msg) -> Response {
    Json(message_json(message)).into_response()
}

async fn create_message(
    State((world, _)): State<ApiState>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let (body, files) = read_body(request).await;
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(
        &mut world,
        &headers,
        "POST",
        &format!("/channels/{channel}/messages"),
    ) {
        return refused;
    }
    if body["content"].as_str().unwrap_or_default().chars().count() > 2000 {
        return discord_error(
            StatusCode::BAD_REQUEST,
            50035,
            "Invalid Form Body: content too long",
        );
    }
    let message = new_message(&mut world, &channel, &body, files);
    message_response(&message)
}

/// `GET /channels/{id}/messages?after=ID&limit=N`: the oldest `limit`
/// (default 50, at most 100) messages after `after`, newest first, as REST
/// shows them (no `guild_id`, no `member`); or a scripted refusal.
async fn channel_history(
    State((world, _)): State<ApiState>,
    Path(channel): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let delay = world.lock().unwrap().history_delay;
    tokio::time::sleep(delay).await;
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(
        &mut world,
        &headers,
        "GET",
        &format!("/channels/{channel}/messages"),
    ) {
        return refused;
    }
    if let Some(status) = world.history_refusals.get(&channel) {
        let status = StatusCode::from_u16(*status).unwrap();
        return discord_error(status, 50001, "Missing Access");
    }
    let after: u64 = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body: limit");
    }
    let mut found: BTreeMap<u64, Value> = world
        .posted
        .iter()
        .filter(|(_, m)| m["channel_id"] == channel.as_str())
        .map(|(id, m)| {
            let mut m = m.clone();
            let fields = m.as_object_mut().unwrap();
            fields.remove("guild_id");
            fields.remove("member");
            (*id, m)
        })
        .collect();
    for message in world.messages.values() {
        if message.channel == channel && !message.is_ephemeral() {
            found.insert(message.id, message_json(message));
        }
    }
    let page: Vec<(u64, Value)> = found
        .into_iter()
        .filter(|(id, _)| *id > after)
        .take(limit)
        .collect();
    let ids = page.iter().map(|(id, _)| *id).collect();
    world.history_reads.push((channel, ids));
    let newest_first: Vec<Value> = page.into_iter().rev().map(|(_, m)| m).collect();
    Json(newest_first).into_response()
}

async fn edit_message(
    State((world, _)): State<ApiState>,
    Path((channel, id)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(
        &mut world,
        &headers,
        "PATCH",
        &format!("/channels/{channel}/messages/{id}"),
    ) {
        return refused;
    }
    match world
        .messages
        .get_mut(&id)
        .filter(|m| m.channel == channel && !m.is_ephemeral())
    {
        Some(message) => {
            apply_edit(message, &body, Vec::new());
            let message = message.clone();
            message_response(&message)
        }
        None => discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
    }
}

/// `DELETE /channels/{id}/messages/{id}`: 204, or 404 Unknown Message
/// (already gone), or a scripted refusal (`refuse_next_delete`).
async fn delete_message(
    State((world, _)): State<ApiState>,
    Path((channel, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut world = world.lock().unwrap();
    if let Some(refused) = gate(
        &mut world,
        &headers,
        "DELETE",
        &format!("/channels/{channel}/messages/{id}"),
    ) {
        return refused;
    }
    if let Some((status, code, message)) = world.delete_refusals.pop_front() {
        return discord_error(StatusCode::from_u16(status).unwrap(), code, message);
    }
    match world.messages.get(&id).filter(|m| m.channel == channel) {
        Some(_) => {
            world.messages.remove(&id);
            world.deleted.push(id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
    }
}

async fn callback(
    State((world, _)): State<ApiState>,
    Path((id, token)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut world = world.lock().unwrap();
    let route = format!("/interactions/{id}/callback");
    if let Some(limited) = scripted_limit(&mut world, &route) {
        world.calls.push(Call {
            method: "POST".into(),
            route,
            status: 429,
            at: Instant::now(),
        });
        return limited;
    }
    record(&mut world, "POST", &route);
    let kind = body["type"].as_u64().unwrap_or(0);
    let flags = body["data"]["flags"].as_u64().unwrap_or(0);
    let Some(interaction) = world.interaction_by_token(&token).filter(|i| i.id == id) else {
        return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
    };
    if interaction.callback.is_some() {
        return discord_error(
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        );
    }
    interaction.callback = Some((kind, flags, Instant::now()));
    let channel = interaction.channel.clone();
    if kind == 4 {
        let message = new_message(&mut world, &channel, &body["data"], Vec::new());
        world.interactions.get_mut(&id).unwrap().original = Some(message.id);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn edit_original(
    State((world, _)): State<ApiState>,
    Path((app, token, message)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let (body, files) = read_body(request).await;
    let mut world = world.lock().unwrap();
    record(&mut world, "PATCH", "/webhooks/original");
    if app != APP_ID || message != "@original" {
        return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    }
    let Some(interaction) = world.interaction_by_token(&token).cloned() else {
        return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    };
    let Some((5, flags, _)) = interaction.callback else {
        return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    };
    if interaction.original_deleted {
        return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    }
    let updated = match interaction.original {
        Some(id) => {
            let message = world.messages.get_mut(&id).unwrap();
            apply_edit(message, &body, files);
            message.clone()
        }
        None => {
            let mut body = body.clone();
            body["flags"] = json!(flags);
            let message = new_message(&mut world, &interaction.channel, &body, files);
            world
                .interactions
                .get_mut(&interaction.id)
                .unwrap()
                .original = Some(message.id);
            message
        }
    };
    message_response(&updated)
}

async fn delete_original(
    State((world, _)): State<ApiState>,
    Path((_app, token, _message)): Path<(String, String, String)>,
) -> Response {
    let mut world = world.lock().unwrap();
    record(&mut world, "DELETE", "/webhooks/original");
    let Some(interaction) = world.interaction_by_token(&token) else {
        return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    };
    interaction.original_deleted = true;
    if let Some(id) = interaction.original.take() {
        world.messages.remove(&id);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn follow_up(
    State((world, _)): State<ApiState>,
    Path((app, token)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (body, files) = read_body(request).await;
    let mut world = world.lock().unwrap();
    record(&mut world, "POST", "/webhooks/follow-up");
    let Some(interaction) = world
        .interaction_by_token(&token)
        .cloned()
        .filter(|_| app == APP_ID)
    else {
        return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    };
    if interaction.callback.is_none() {
        return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    }
    let message = new_message(&mut world, &interaction.channel, &body, files);
    world
        .interactions
        .get_mut(&interaction.id)
        .unwrap()
        .follow_ups
        .push(message.id);
    message_response(&message)
}

// ------------------------------------------------------------- gateway --

async fn gateway_socket(State(world): State<Shared>, upgrade: WebSocketUpgrade) -> Response {
    {
        let mut world = world.lock().unwrap();
        if world.gateway.refusing {
            world.gateway.connections += 1;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    upgrade.on_upgrade(move |socket| connection(socket, world))
}

/// One gateway connection: HELLO, then IDENTIFY or RESUME, heartbeats, and
/// the dispatches and closes the test asks for.
async fn connection(socket: WebSocket, world: Shared) {
    let (mut sink, mut stream) = socket.split();
    let (control, mut controls) = mpsc::unbounded_channel::<Control>();
    let number = {
        let mut world = world.lock().unwrap();
        world.gateway.connections += 1;
        world.gateway.connections
    };
    let hello = json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}});
    if sink
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                let WsMessage::Text(text) = frame else {
                    if matches!(frame, WsMessage::Close(_)) { break }
                    continue;
                };
                let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else { break };
                let replies = answer(&world, number, &control, &payload);
                for reply in replies {
                    if sink.send(WsMessage::Text(reply.to_string().into())).await.is_err() {
                        break;
                    }
                }
            }
            next = controls.recv() => match next {
                Some(Control::Send(event)) => {
                    if sink.send(WsMessage::Text(event.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Some(Control::Close(code)) => {
                    let _ = sink
                        .send(WsMessage::Close(Some(CloseFrame { code, reason: "test disconnect".into() })))
                        .await;
                    break;
                }
                None => break,
            }
        }
    }
    let mut world = world.lock().unwrap();
    if world
        .gateway
        .live
        .as_ref()
        .is_some_and(|(n, _)| *n == number)
    {
        world.gateway.live = None;
    }
}

/// What the gateway sends back for one client payload.
fn answer(
    world: &Shared,
    number: u64,
    control: &mpsc::UnboundedSender<Control>,
    payload: &Value,
) -> Vec<Value> {
    let mut world = world.lock().unwrap();
    match payload["op"].as_u64() {
        Some(1) => {
            world.gateway.heartbeats += 1;
            vec![json!({"op": 11})]
        }
        Some(2) => {
            if !token_ok(&payload["d"]["token"]) {
                let _ = control.send(Control::Close(4004));
                return Vec::new();
            }
            let gateway = &mut world.gateway;
            gateway.identifies += 1;
            gateway.intents = payload["d"]["intents"].as_u64();
            gateway.session_id = Some(format!("session-{}", gateway.identifies));
            gateway.seq = 0;
            gateway.log.clear();
            gateway.live = Some((number, control.clone()));
            let ready = json!({
                "v": 10,
                "user": user_json(bot()),
                "guilds": [{"id": GUILD_ID, "unavailable": true}],
                "session_id": gateway.session_id,
                "resume_gateway_url": "ws://unused.invalid",
                "shard": [0, 1],
                "application": {"id": APP_ID, "flags": 0},
            });
            dispatch(&mut world, "READY", ready);
            Vec::new()
        }
        Some(6) => {
            let gateway = &mut world.gateway;
            let session_matches =
                gateway.session_id.as_deref() == payload["d"]["session_id"].as_str();
            if !session_matches || !token_ok(&payload["d"]["token"]) {
                return vec![json!({"op": 9, "d": false})];
            }
            gateway.resumes += 1;
            let from = payload["d"]["seq"].as_u64().unwrap_or(0);
            let missed: Vec<Value> = gateway
                .log
                .iter()
                .filter(|(seq, _)| *seq > from)
                .map(|(_, event)| event.clone())
                .collect();
            gateway.replayed += missed.len() as u32;
            gateway.live = Some((number, control.clone()));
            for event in missed {
                let _ = control.send(Control::Send(event));
            }
            dispatch(&mut world, "RESUMED", json!({}));
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Discord takes the gateway token bare or with its "Bot " prefix.
fn token_ok(token: &Value) -> bool {
    let token = token.as_str().unwrap_or_default();
    token.strip_prefix("Bot ").unwrap_or(token) == TOKEN
}

/// The payloads this fake dispatches, for checking that serenity reads
/// them (it drops what it cannot parse with only a log line).
pub fn sample_events() -> Vec<(&'static str, Value)> {
    let user = User {
        id: "123",
        name: "Maya",
    };
    let shown = Msg {
        id: 42,
        channel: "77".into(),
        content: "Draft".into(),
        components: json!([{"type": 1, "components": [
            {"type": 2, "style": 3, "label": "Approve", "custom_id": "abc"}
        ]}]),
        flags: 0,
        files: Vec::new(),
        allowed_mentions: Value::Null,
        edits: 0,
    };
    let mut events = Vec::new();
    for place in [Place::Guild, Place::Dm] {
        let data = json!({"id": "8", "name": "draft", "type": 1, "options": [{"name": "request", "type": 3, "value": "x"}]});
        events.push((
            "INTERACTION_CREATE",
            interaction_payload("1", 2, data, user, place, "77", None),
        ));
        let data = json!({"custom_id": "abc", "component_type": 2});
        events.push((
            "INTERACTION_CREATE",
            interaction_payload("2", 3, data, user, place, "77", Some(&shown)),
        ));
        events.push((
            "MESSAGE_CREATE",
            message_create(3, user, place, "77", "/help", true),
        ));
    }
    events
}
