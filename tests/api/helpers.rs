//! `TestApp`: a soloist on a fresh database (a new PostgreSQL database per
//! test, or SQLite in a temp dir) talking to a fake model server, driven the
//! way the console drives it: an `Inbound` in, the outbox read back out.

use std::sync::atomic::{AtomicU64, Ordering};

use soloist::app::App;
use soloist::config::{LoadOptions, Secret, Settings};
use soloist::domain::{
    Button, ChatKind, ChatRef, Inbound, InboundContent, Origin, Outbound, Platform,
};
use soloist::store::Store;

use crate::fake_llm::FakeLlm;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(db: Db)` once per backend, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Db::Postgres).await
                }
            }
        )*
    };
}

/// A database for one test: its URL, and the temp dir holding it (SQLite)
/// or nothing (PostgreSQL).
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (admin URL, database name), dropped with the test so a
    /// full run does not leave hundreds of databases on the server.
    pg_database: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg_database.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on a
        // future: a thread with its own small runtime does the DROP. FORCE
        // ends connections a pool has not closed yet.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let store = Store::connect(&admin, 1).await.ok()?;
                let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(store.pool())
                .await;
                store.close().await;
                dropped.ok()
            })
        })
        .join();
    }
}

impl TestDb {
    pub async fn create(db: Db) -> TestDb {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Logs go to the test's captured output; RUST_LOG=debug shows more.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("soloist.db").display()
                );
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg_database: None,
                }
            }
            Db::Postgres => {
                let admin = std::env::var("SOLOIST_TEST_PG_URL").expect(
                    "SOLOIST_TEST_PG_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
                );
                let name = format!("soloist_test_{}", uuid::Uuid::new_v4().simple());
                let store = Store::connect(&admin, 1)
                    .await
                    .expect("connect to the test PostgreSQL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(store.pool())
                    .await
                    .unwrap();
                store.close().await;
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: url.to_string(),
                    _dir: None,
                    pg_database: Some((admin, name)),
                }
            }
        }
    }
}

pub struct TestApp {
    pub app: App,
    pub llm: FakeLlm,
    pub db: TestDb,
    pub home: tempfile::TempDir,
    chat: ChatRef,
    updates: AtomicU64,
}

/// Settings for tests: the built-in defaults, no environment, the OpenAI
/// provider pointed at `llm_url` when given.
pub fn test_settings(llm_url: Option<&str>) -> Settings {
    // What `main` does first; a test that makes no TestDb (the doctor's)
    // must not depend on another test having installed it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = Settings::load(&LoadOptions::default()).unwrap();
    if let Some(url) = llm_url {
        let openai = settings.models.providers.get_mut("openai").unwrap();
        openai.base_url = url.to_string();
        openai.api_key = Secret::new("sk-test-not-a-real-key");
    }
    settings.models.timeout_secs = 5;
    // Retries in tests wait milliseconds, not seconds.
    settings.models.backoff_ms = 10;
    // Rate limits are tested in policy.rs; elsewhere a test sends faster
    // than any person would.
    settings.policy.guard.rate_limits = soloist::policy::RateLimitSettings {
        per_user_per_minute: 0,
        per_user_burst: 0,
        per_flow_per_minute: 0,
        per_flow_burst: 0,
    };
    // The fast-tier review adds a model call after every high-quality
    // draft; it is tested in policy.rs, and elsewhere tests count the
    // draft's calls alone.
    settings.policy.guard.fast_review = false;
    settings
}

impl TestApp {
    pub async fn spawn(db: Db) -> TestApp {
        TestApp::spawn_with(db, |_| {}).await
    }

    /// Spawns with settings changed by `adjust` (after the fake model is
    /// configured).
    pub async fn spawn_with(db: Db, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let llm = FakeLlm::start().await;
        let db = TestDb::create(db).await;
        let mut settings = test_settings(Some(&llm.base_url));
        settings.database.url = Secret::new(db.url.clone());
        adjust(&mut settings);
        let home = tempfile::tempdir().unwrap();
        let app = App::build(settings, home.path())
            .await
            .expect("build the app");
        TestApp {
            app,
            llm,
            db,
            home,
            chat: ChatRef::new(Platform::Console, "console"),
            updates: AtomicU64::new(0),
        }
    }

    /// A second soloist process on the same database (after a crash, or
    /// beside the first).
    pub async fn restart(&self, adjust: impl FnOnce(&mut Settings)) -> App {
        let mut settings = test_settings(Some(&self.llm.base_url));
        settings.database.url = Secret::new(self.db.url.clone());
        adjust(&mut settings);
        App::build(settings, self.home.path())
            .await
            .expect("rebuild the app")
    }

    /// Adds a flow file under the home directory and starts the app again
    /// so it is loaded.
    pub async fn with_flow(mut self, name: &str, toml: &str) -> TestApp {
        let dir = self.home.path().join("config/flows");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
        self.app = self.restart(|_| {}).await;
        self
    }

    pub fn inbound(&self, content: InboundContent) -> Inbound {
        let n = self.updates.fetch_add(1, Ordering::SeqCst);
        Inbound {
            chat: self.chat.clone(),
            update_key: format!("test-{n}"),
            user_id: "owner".into(),
            user_name: "Maya".into(),
            message_id: None,
            content,
            chat_kind: ChatKind::Private,
            origin: Origin::Typed,
        }
    }

    /// The owner types `text`; returns what the bot sends back.
    pub async fn say(&self, text: &str) -> Vec<Outbound> {
        let inbound = self.inbound(InboundContent::Text(text.into()));
        self.deliver(&inbound).await
    }

    /// The owner presses `button`; returns what the bot sends back.
    pub async fn press(&self, button: &Button) -> Vec<Outbound> {
        let inbound = self.inbound(InboundContent::Button(button.token.clone()));
        self.deliver(&inbound).await
    }

    pub async fn deliver(&self, inbound: &Inbound) -> Vec<Outbound> {
        self.app
            .controller
            .handle(inbound)
            .await
            .expect("handle the update");
        self.drain().await
    }

    /// Everything the outbox holds for the console, marked delivered.
    pub async fn drain(&self) -> Vec<Outbound> {
        drain(&self.app.store).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        count(&self.app.store, table).await
    }
}

pub async fn drain(store: &Store) -> Vec<Outbound> {
    let pending = store.pending_outbox(Platform::Console, 100).await.unwrap();
    let mut out = Vec::new();
    for message in pending {
        store.mark_delivered(message.id, None).await.unwrap();
        out.push(message.message);
    }
    out
}

pub async fn count(store: &Store, table: &str) -> i64 {
    store
        .table_counts()
        .await
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == table)
        .map(|(_, n)| n)
        .unwrap_or_else(|| panic!("no table {table}"))
}

/// The button labelled `label` in the last message that has buttons.
pub fn button(messages: &[Outbound], label: &str) -> Button {
    messages
        .iter()
        .rev()
        .flat_map(|m| m.buttons.iter())
        .find(|b| b.label == label)
        .unwrap_or_else(|| panic!("no '{label}' button in {messages:#?}"))
        .clone()
}

pub fn texts(messages: &[Outbound]) -> String {
    messages
        .iter()
        .map(|m| m.text.as_str())
        .collect::<Vec<_>>()
        .join("\n---\n")
}
