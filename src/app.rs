//! Wiring: builds the store, prompts, flows, model client, engine and
//! controller from settings. `main` and the tests both start here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::agents::Agents;
use crate::config::Settings;
use crate::controller::Controller;
use crate::engine::{Engine, EngineParts};
use crate::flows::{FlowCatalog, FlowError, PromptError, Prompts};
use crate::store::{Backend, Store, StoreError, redact_url, sqlite_path};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open the database at {url}")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// `[autonomy]` names a flow that does not exist.
    #[error("{0}")]
    Autonomy(String),
}

/// A running soloist: everything a front end (console, chat platforms)
/// needs.
#[derive(Debug, Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub home: PathBuf,
    pub store: Store,
    pub engine: Engine,
    pub controller: Controller,
    /// Where the data lives, fit to print (no password).
    pub database_label: String,
    /// What the adapters report for `/healthz`.
    pub health: crate::http::Health,
    /// Routes adapters mount on the HTTP server (the Telegram webhook).
    pub hooks: crate::http::Hooks,
}

impl App {
    /// Opens the database (migrating it), loads prompts and flows, and
    /// builds the engine.
    pub async fn build(settings: Settings, home: &Path) -> Result<App, AppError> {
        let url = settings.database_url(home);
        let store = Store::open(&url, settings.database.max_connections)
            .await
            .map_err(|source| AppError::Store {
                url: redact_url(&url),
                source,
            })?;
        let app = App::with_store(settings, home, store)?;
        // AUTONOMY: a level the settings file changed is audited at start.
        if let Err(error) = crate::autonomy::audit_settings(&app.store, &app.settings).await {
            tracing::warn!(error = ?error, "the autonomy settings could not be audited");
        }
        Ok(app)
    }

    /// Builds on an already opened store (tests share one this way).
    pub fn with_store(mut settings: Settings, home: &Path, store: Store) -> Result<App, AppError> {
        // POLICY HOOK: unknown effects and flows that skip a required
        // approval stop the start; the business's contacts are never redacted.
        crate::policy::absorb_business_contacts(&mut settings);
        let guard = Arc::new(crate::policy::Guard::new(&settings)?);
        let settings = Arc::new(settings);
        let prompts = Prompts::load(home)?;
        let flows = FlowCatalog::load(home, &prompts)?;
        guard.check_flows(&flows)?;
        // AUTONOMY: a level for a flow that does not exist is a typo.
        crate::autonomy::check_settings(&settings, flows.names()).map_err(AppError::Autonomy)?;
        let timezone = settings.timezone().unwrap_or(chrono_tz::UTC);
        let agents = Agents::new(
            settings.models.clone(),
            &settings.policy,
            timezone,
            store.clone(),
        );
        let engine = Engine::new(EngineParts {
            store: store.clone(),
            flows,
            prompts,
            agents,
            settings: settings.clone(),
            guard,
        });
        let database_label = describe_database(&settings.database_url(home), store.backend());
        let hooks = crate::http::Hooks::default();
        hooks.mount(
            crate::leads::hook::PATH,
            crate::leads::hook::hook(store.clone(), settings.hooks.clone()),
        );
        Ok(App {
            controller: Controller::new(engine.clone()),
            settings,
            home: home.to_path_buf(),
            store,
            engine,
            database_label,
            health: crate::http::Health::default(),
            hooks,
        })
    }
}

/// "SQLite: ./data/soloist.db" or "PostgreSQL: host/db".
fn describe_database(url: &str, backend: Backend) -> String {
    let place = match backend {
        Backend::Sqlite => sqlite_path(url)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "in memory".into()),
        Backend::Postgres => match url::Url::parse(url) {
            Ok(parsed) => format!(
                "{}{}",
                parsed.host_str().unwrap_or("local socket"),
                parsed.path()
            ),
            Err(_) => "configured URL".into(),
        },
    };
    format!("{}: {place}", backend.name())
}
