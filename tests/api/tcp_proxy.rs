//! A database outage without touching the shared PostgreSQL: a small TCP
//! proxy between soloist and the server that, on request, cuts every
//! connection and refuses new ones, then lets them through again. And the
//! test that soloist lives through it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use soloist::config::Secret;
use soloist::runtime;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::fake_llm::{Behavior, DEFAULT_DRAFT};
use crate::fake_telegram::FakeTelegram;
use crate::helpers::{Db, TestApp};

/// Where the proxy forwards to: the test server's Unix socket (the test
/// URL names its folder in `host=`), so the proxy's TCP side needs no
/// password.
fn server_socket() -> PathBuf {
    let admin = std::env::var("SOLOIST_TEST_PG_URL").expect("SOLOIST_TEST_PG_URL");
    let url = url::Url::parse(&admin).unwrap();
    let folder = url
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "/var/run/postgresql".into());
    let port = url.port().unwrap_or(5432);
    PathBuf::from(folder).join(format!(".s.PGSQL.{port}"))
}

struct ProxyState {
    up: bool,
    /// Cancelled to cut every connection open now.
    cut: CancellationToken,
    /// Connections refused or cut so far.
    refused: u64,
}

#[derive(Clone)]
pub struct TcpProxy {
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
}

impl TcpProxy {
    pub async fn start() -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState {
            up: true,
            cut: CancellationToken::new(),
            refused: 0,
        }));
        let shared = state.clone();
        let target = server_socket();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = {
                    let mut state = shared.lock().unwrap();
                    if !state.up {
                        state.refused += 1;
                        continue; // dropped: the connection is closed at once
                    }
                    state.cut.clone()
                };
                tokio::spawn(forward(client, target.clone(), cut));
            }
        });
        TcpProxy { port, state }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.up = false;
        state.cut.cancel();
        state.cut = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().up = true;
    }

    pub fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }

    /// `url` (a test database's) through this proxy.
    pub fn url_for(&self, url: &str) -> String {
        let parsed = url::Url::parse(url).unwrap();
        format!(
            "postgres://{}@127.0.0.1:{}{}?sslmode=disable",
            parsed.username(),
            self.port,
            parsed.path()
        )
    }
}

async fn forward(mut client: TcpStream, target: PathBuf, cut: CancellationToken) {
    let Ok(mut server) = UnixStream::connect(&target).await else {
        return;
    };
    tokio::select! {
        _ = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_cut_during_a_draft_then_restored_the_draft_arrives_and_soloist_keeps_running()
 {
    const OWNER: i64 = 111;
    let proxy = TcpProxy::start().await;
    let tg = FakeTelegram::start().await;
    let fake = tg.clone();
    let via = proxy.clone();
    let test = TestApp::spawn_with(Db::Postgres, move |settings| {
        settings.database.url = Secret::new(via.url_for(settings.database.url.expose().unwrap()));
        settings.telegram.token = Secret::new(fake.token.clone());
        settings.telegram.api_url = fake.api_url.clone();
        settings.telegram.allowed_user_ids = vec![OWNER.to_string()];
        settings.telegram.poll_timeout_secs = 1;
        settings.telegram.rate_limits = false;
    })
    .await;
    // The model takes a while: the outage falls inside the step.
    test.llm.always(Behavior::Delayed(
        Duration::from_secs(2),
        Box::new(Behavior::reply(DEFAULT_DRAFT)),
    ));
    let shutdown = CancellationToken::new();
    let services = runtime::platform_services(&test.app, &shutdown);
    let running = tokio::spawn(runtime::run(test.app.clone(), services, shutdown.clone()));
    tg.wait_for(30, "polling", |s| (!s.offsets.is_empty()).then_some(()))
        .await;

    tg.user_says(OWNER, "/draft a post about the spring audit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while test.llm.calls() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the model was never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        proxy.refused() > 0,
        "soloist tried the database during the outage"
    );
    assert!(
        !running.is_finished(),
        "soloist keeps running while the database is away"
    );
    proxy.restore();

    let offer = tg
        .wait_for(60, "the draft offered after the outage", |s| {
            s.sent_to(OWNER)
                .into_iter()
                .find(|m| m.visible().contains(DEFAULT_DRAFT) && m.button("Approve").is_some())
        })
        .await;
    assert!(offer.button("Approve").is_some());
    assert!(!running.is_finished(), "soloist is still running");
    shutdown.cancel();
    running
        .await
        .unwrap()
        .expect("a clean stop after the outage");
}
