//! `soloist run`'s HTTP server (axum), on when `http.listen` is set:
//! `/healthz` for load balancers and container health checks, `/metrics`
//! in Prometheus text format for scrapers.
//!
//! The metrics are totals read from the database at scrape time (model
//! calls, tokens, cost, cache hits, finished runs and their durations by
//! flow, decisions by outcome, outbox backlog, updates handled), set on the
//! `metrics` recorder and rendered by `metrics-exporter-prometheus`: every
//! process sharing the database reports the same numbers, and nothing in
//! the engine or the adapters has to count.

mod metrics_export;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::store::Store;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// "127.0.0.1:9090"; empty: no server.
    pub listen: String,
    /// Bearer token that opens `/metrics` to non-loopback clients.
    pub metrics_token: Secret,
    pub max_outbox_backlog: i64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: String::new(),
            metrics_token: Secret::default(),
            max_outbox_backlog: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
}

/// Whether each adapter this process holds is connected, and why not. An
/// adapter reports itself here (through `frontdoor::Handles`); a process
/// holding none (a standby) is healthy.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, AdapterHealth>>>);

#[derive(Debug, Clone)]
struct AdapterHealth {
    connected: bool,
    /// Why it is not connected, when the adapter said.
    reason: Option<String>,
}

impl Health {
    pub fn set(&self, adapter: &str, connected: bool) {
        self.put(adapter, connected, None);
    }

    /// Not connected, for `reason` (shown by `/healthz`; no secrets).
    pub fn down(&self, adapter: &str, reason: impl Into<String>) {
        self.put(adapter, false, Some(reason.into()));
    }

    /// Runs an adapter's service with `adapter` reported down (`starting`)
    /// until the service itself says it is connected, and down with why
    /// once it has stopped.
    pub async fn track<E: std::fmt::Display>(
        &self,
        adapter: &str,
        starting: &str,
        service: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        self.down(adapter, starting);
        let result = service.await;
        self.down(
            adapter,
            match &result {
                Ok(()) => "stopped".to_string(),
                Err(error) => format!("stopped: {error}"),
            },
        );
        result
    }

    fn put(&self, adapter: &str, connected: bool, reason: Option<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(adapter.to_string(), AdapterHealth { connected, reason });
    }

    fn snapshot(&self) -> BTreeMap<String, AdapterHealth> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A POST route an adapter mounts on this server while it runs (the
/// Telegram webhook): it answers with a status only.
pub type Hook = Arc<dyn Fn(HeaderMap, Bytes) -> BoxFuture<'static, StatusCode> + Send + Sync>;

/// The routes adapters mounted, by path. The server is started before the
/// adapters are, so it looks them up per request instead of at build time.
#[derive(Clone, Default)]
pub struct Hooks(Arc<Mutex<BTreeMap<String, Hook>>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_tuple("Hooks").field(&paths).finish()
    }
}

impl Hooks {
    pub fn mount(&self, path: &str, hook: Hook) {
        self.lock().insert(path.to_string(), hook);
    }

    pub fn unmount(&self, path: &str) {
        self.lock().remove(path);
    }

    fn get(&self, path: &str) -> Option<Hook> {
        self.lock().get(path).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Hook>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone)]
pub struct HttpState {
    pub store: Store,
    pub settings: HttpSettings,
    pub health: Health,
    pub hooks: Hooks,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {address} for HTTP (http.listen)")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// The routes, for a server or a test.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(hooked)
        .with_state(Arc::new(state))
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// `soloist run`'s HTTP service, or None when `http.listen` is empty.
pub async fn service(
    app: &crate::app::App,
    shutdown: CancellationToken,
) -> Result<Option<crate::runtime::Service>, HttpError> {
    let settings = app.settings.http.clone();
    let address = settings.listen.trim().to_string();
    if address.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| HttpError::Bind {
            address: address.clone(),
            source,
        })?;
    tracing::info!(%address, "serving /healthz and /metrics");
    let state = HttpState {
        store: app.store.clone(),
        settings,
        health: app.health.clone(),
        hooks: app.hooks.clone(),
    };
    Ok(Some(Box::pin(async move {
        serve(listener, state, shutdown)
            .await
            .map_err(|e| format!("the HTTP server stopped: {e}"))
    })))
}

async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    let mut reasons = Vec::new();
    let database = tokio::time::timeout(Duration::from_secs(3), state.store.ping()).await;
    let database_ok = matches!(database, Ok(Ok(())));
    if !database_ok {
        reasons.push("the database is unreachable".to_string());
    }
    let adapters = state.health.snapshot();
    for (name, adapter) in &adapters {
        match (&adapter.connected, &adapter.reason) {
            (true, _) => {}
            (false, Some(why)) => reasons.push(format!("{name} is not connected: {why}")),
            (false, None) => reasons.push(format!("{name} is not connected")),
        }
    }
    let adapters: BTreeMap<&String, bool> =
        adapters.iter().map(|(n, a)| (n, a.connected)).collect();
    let backlog = if database_ok {
        match state.store.outbox_backlog().await {
            Ok(n) => Some(n),
            Err(_) => {
                reasons.push("the outbox cannot be read".into());
                None
            }
        }
    } else {
        None
    };
    if let Some(n) = backlog.filter(|n| *n > state.settings.max_outbox_backlog) {
        reasons.push(format!(
            "{n} messages wait in the outbox (more than {})",
            state.settings.max_outbox_backlog
        ));
    }
    let body = serde_json::json!({
        "status": if reasons.is_empty() { "ok" } else { "unhealthy" },
        "database": if database_ok { "ok" } else { "unreachable" },
        "adapters": if adapters.is_empty() {
            serde_json::json!("none held by this process (standby)")
        } else {
            serde_json::json!(adapters)
        },
        "outbox_backlog": backlog,
        "reasons": reasons,
    });
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Any other path: a mounted hook's when one is (POST only), else 404.
async fn hooked(
    State(state): State<Arc<HttpState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match state.hooks.get(uri.path()) {
        Some(hook) if method == Method::POST => hook(headers, body).await.into_response(),
        Some(_) => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !may_scrape(&state.settings, peer, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            "metrics are for loopback clients or a bearer token (http.metrics_token)\n",
        )
            .into_response();
    }
    match metrics_export::render(&state.store).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => {
            tracing::warn!(error = ?error, "reading metrics from the database failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unreachable\n",
            )
                .into_response()
        }
    }
}

fn may_scrape(settings: &HttpSettings, peer: SocketAddr, headers: &HeaderMap) -> bool {
    if let Some(token) = settings.metrics_token.expose() {
        let offered = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if constant_time_eq(offered.as_bytes(), token.as_bytes()) {
            return true;
        }
    }
    peer.ip().is_loopback()
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_open_to_loopback_or_the_right_token_only() {
        let mut settings = HttpSettings::default();
        let remote: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let none = HeaderMap::new();
        assert!(may_scrape(&settings, local, &none));
        assert!(!may_scrape(&settings, remote, &none));
        settings.metrics_token = Secret::new("s3cret");
        let mut good = HeaderMap::new();
        good.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let mut bad = HeaderMap::new();
        bad.insert(header::AUTHORIZATION, "Bearer s3cres".parse().unwrap());
        assert!(may_scrape(&settings, remote, &good));
        assert!(!may_scrape(&settings, remote, &bad));
    }
}
