//! `soloist doctor`: checks the configuration, the database, the model
//! provider and the platform tokens, and prints one line per finding; every
//! problem comes with its fix.

use std::path::Path;
use std::time::Duration;

use crate::config::{ProviderKind, ProviderSettings, Settings};
use crate::domain::Tier;
use crate::store::{Store, redact_url, sqlite_path};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    /// Works, but something is missing that the operator may want.
    Note(String),
    /// Something is wrong; the second part says how to fix it.
    Problem(String, String),
}

impl Finding {
    pub fn line(&self) -> String {
        match self {
            Finding::Ok(what) => format!("ok    {what}"),
            Finding::Note(what) => format!("note  {what}"),
            Finding::Problem(what, fix) => format!("FIX   {what} → {fix}"),
        }
    }

    pub fn is_problem(&self) -> bool {
        matches!(self, Finding::Problem(..))
    }
}

pub async fn check(settings: &Settings, home: &Path) -> Vec<Finding> {
    let mut findings = vec![Finding::Ok(format!(
        "configuration loaded (business: {})",
        settings.business.name
    ))];
    findings.push(check_database(settings, home).await);
    findings.extend(check_models(settings).await);
    findings.push(check_heartbeat(settings));
    for (name, token, variable) in [
        ("Telegram", &settings.telegram.token, "TELEGRAM_BOT_TOKEN"),
        ("Discord", &settings.discord.token, "DISCORD_TOKEN"),
    ] {
        findings.push(if token.is_set() {
            Finding::Ok(format!("{name} token is set"))
        } else {
            Finding::Note(format!(
                "{name} is not configured (set {variable} to use it; soloist chat works without)"
            ))
        });
    }
    findings.extend(check_who_may_act(settings));
    findings.push(crate::memory::doctor_finding(settings));
    findings
}

/// A running step renews its run's lease every heartbeat; with fewer than
/// three beats per lease, one slow renewal (a busy database) lets another
/// worker take the run mid-step.
fn check_heartbeat(settings: &Settings) -> Finding {
    let engine = &settings.engine;
    if engine.heartbeat_secs > 0.0 && engine.heartbeat_secs * 3.0 <= engine.lease_secs {
        Finding::Ok(format!(
            "run leases: {}s, renewed every {}s while a step runs",
            engine.lease_secs, engine.heartbeat_secs
        ))
    } else {
        Finding::Problem(
            format!(
                "engine.heartbeat_secs ({}) is not at most a third of engine.lease_secs ({}): a running step could lose its run to another worker",
                engine.heartbeat_secs, engine.lease_secs
            ),
            "lower engine.heartbeat_secs or raise engine.lease_secs".into(),
        )
    }
}

/// A platform with a token but nobody allowed refuses everyone, the owner
/// included.
fn check_who_may_act(settings: &Settings) -> Vec<Finding> {
    let platforms = [
        (
            "Telegram",
            settings.telegram.token.is_set(),
            &settings.owner.telegram_user_id,
            &settings.telegram.allowed_user_ids,
        ),
        (
            "Discord",
            settings.discord.token.is_set(),
            &settings.owner.discord_user_id,
            &settings.discord.allowed_user_ids,
        ),
    ];
    platforms
        .into_iter()
        .filter(|(_, configured, owner, allowed)| {
            *configured && owner.is_empty() && allowed.is_empty()
        })
        .map(|(name, ..)| {
            let key = name.to_lowercase();
            Finding::Problem(
                format!(
                    "{name} is configured but nobody may use it: every message would be refused"
                ),
                format!(
                    "set owner.{key}_user_id (SOLOIST__OWNER__{}_USER_ID) to your {name} user id",
                    key.to_uppercase()
                ),
            )
        })
        .collect()
}

async fn check_database(settings: &Settings, home: &Path) -> Finding {
    let url = settings.database_url(home);
    let shown = redact_url(&url);
    if let Some(path) = sqlite_path(&url).filter(|p| !p.exists()) {
        return Finding::Note(format!(
            "the SQLite database {} does not exist yet; soloist chat or soloist migrate creates it",
            path.display()
        ));
    }
    // One plain connection first: a pool retries a refused connection until
    // its timeout, and a doctor should answer at once with the real cause.
    if let Err(problem) = probe_connection(&url, &shown).await {
        return problem;
    }
    let store = match Store::connect(&url, 1).await {
        Ok(store) => store,
        Err(error) => {
            return Finding::Problem(
                format!("cannot open the database at {shown}: {}", error_chain(&error)),
                "check DATABASE_URL (postgres://user:pass@host/db or sqlite://path) and that the server is running".into(),
            );
        }
    };
    let finding = match store.pending_migrations().await {
        Ok(0) => Finding::Ok(format!(
            "database {} at {shown} is up to date",
            store.backend().name()
        )),
        Ok(n) => Finding::Problem(
            format!("database at {shown} has {n} migration(s) to apply"),
            "run `soloist migrate` (soloist chat and run also apply them at start)".into(),
        ),
        Err(error) => Finding::Problem(
            format!(
                "cannot read the database's migrations: {}",
                error_chain(&error)
            ),
            "run `soloist migrate`".into(),
        ),
    };
    // Delivery trouble is the database's news too (the outbox is a table).
    let finding = match (&finding, crate::outbox::trouble(&store).await) {
        (Finding::Ok(_), Ok(Some(problem))) => Finding::Problem(problem, "see the log lines \"has not been delivered\" for the cause (network, token, a blocked bot)".into()),
        _ => finding,
    };
    store.close().await;
    finding
}

async fn probe_connection(url: &str, shown: &str) -> Result<(), Finding> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let fix = "check DATABASE_URL (postgres://user:pass@host/db or sqlite://path) and that the server is running";
    match tokio::time::timeout(Duration::from_secs(5), sqlx::AnyConnection::connect(url)).await {
        Err(_) => Err(Finding::Problem(
            format!("the database at {shown} did not answer within 5 s"),
            fix.into(),
        )),
        Ok(Err(error)) => Err(Finding::Problem(
            format!(
                "cannot open the database at {shown}: {}",
                error_chain(&error)
            ),
            fix.into(),
        )),
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
    }
}

async fn check_models(settings: &Settings) -> Vec<Finding> {
    let models = &settings.models;
    if !models.any_configured() {
        return vec![Finding::Problem(
            "no model provider is configured; flows that write will say so".into(),
            "set OPENAI_API_KEY (and OPENAI_BASE_URL for Ollama, OpenRouter or vLLM) or ANTHROPIC_API_KEY".into(),
        )];
    }
    let mut findings = Vec::new();
    for (name, provider) in models.providers.iter().filter(|(_, p)| p.is_configured()) {
        findings.push(check_provider(name, provider).await);
    }
    for tier in [Tier::Router, Tier::Fast, Tier::Quality] {
        let chain = models.usable_chain(tier);
        findings.push(match chain.first() {
            Some(first) => Finding::Ok(format!(
                "tier {tier}: {} (then {} fallback(s))",
                first,
                chain.len() - 1
            )),
            None => Finding::Problem(
                format!("tier {tier} has no model of a configured provider"),
                format!("add a model of a configured provider to models.tiers.{tier}"),
            ),
        });
    }
    findings
}

/// Lists the provider's models: proves the address and the key.
async fn check_provider(name: &str, provider: &ProviderSettings) -> Finding {
    let endpoint = provider.endpoint().trim_end_matches('/');
    let shown = redact_url(endpoint);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            return Finding::Problem(
                format!("cannot build an HTTP client: {error}"),
                "report this bug".into(),
            );
        }
    };
    let request = match provider.kind {
        ProviderKind::Openai => {
            let request = client.get(format!("{endpoint}/models"));
            match provider.api_key.expose() {
                Some(key) => request.bearer_auth(key),
                None => request,
            }
        }
        ProviderKind::Anthropic => client
            .get(format!("{endpoint}/v1/models"))
            .header("x-api-key", provider.api_key.expose().unwrap_or_default())
            .header("anthropic-version", "2023-06-01"),
    };
    match request.send().await {
        Ok(reply) if reply.status().is_success() => {
            Finding::Ok(format!("provider {name} at {shown} answers"))
        }
        Ok(reply) if matches!(reply.status().as_u16(), 401 | 403) => Finding::Problem(
            format!(
                "provider {name} at {shown} rejected the API key (HTTP {})",
                reply.status().as_u16()
            ),
            format!("check models.providers.{name}.api_key (OPENAI_API_KEY / ANTHROPIC_API_KEY)"),
        ),
        Ok(reply) => Finding::Problem(
            format!(
                "provider {name} at {shown} answered HTTP {}",
                reply.status().as_u16()
            ),
            "check its base URL: most OpenAI-compatible servers end in /v1".into(),
        ),
        Err(error) => Finding::Problem(
            format!(
                "cannot reach provider {name} at {shown}: {}",
                error_chain(&error)
            ),
            "check its base URL (OPENAI_BASE_URL) and that the server is running".into(),
        ),
    }
}

/// Written once, in the front door; kept here under its old name.
pub use crate::frontdoor::error_chain;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadOptions;

    #[test]
    fn a_heartbeat_slower_than_a_third_of_the_lease_is_a_problem() {
        let mut settings = Settings::load(&LoadOptions::default()).unwrap();
        assert!(!check_heartbeat(&settings).is_problem(), "the defaults fit");
        settings.engine.heartbeat_secs = settings.engine.lease_secs / 2.0;
        let finding = check_heartbeat(&settings);
        assert!(finding.is_problem());
        assert!(
            finding.line().contains("heartbeat_secs"),
            "{}",
            finding.line()
        );
    }
}
