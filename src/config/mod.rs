//! Typed settings, layered: the defaults compiled into the binary, then
//! `<home>/config/default.toml`, then the file named by `--config` or
//! `SOLOIST_CONFIG`, then the ecosystem variables (`DATABASE_URL`,
//! `OPENAI_API_KEY`, …), then `SOLOIST__SECTION__KEY` variables.
//!
//! Tokens and keys are [`Secret`]s: they never print, so a settings dump in a
//! log or an error cannot leak them.

mod models;
mod redact;

pub use redact::{redact_url, redact_urls_in};

pub use models::{
    BatchSettings, LabelPolicy, ModelRef, ModelsSettings, OnBudget, Price, ProviderKind,
    ProviderSettings, TierChains,
};

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::Platform;

/// The defaults every build carries, so the binary runs from any directory.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// Environment variables read under the names their ecosystems use, mapped to
/// the setting they fill.
const ECOSYSTEM_VARIABLES: [(&str, &str); 6] = [
    ("DATABASE_URL", "database.url"),
    ("OPENAI_API_KEY", "models.providers.openai.api_key"),
    ("OPENAI_BASE_URL", "models.providers.openai.base_url"),
    ("ANTHROPIC_API_KEY", "models.providers.anthropic.api_key"),
    ("TELEGRAM_BOT_TOKEN", "telegram.token"),
    ("DISCORD_TOKEN", "discord.token"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// figment's message names the key, the expected type and the file.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("config file {path} does not exist")]
    MissingFile { path: PathBuf },
}

/// A token or key. Empty means "not set". `Debug` prints `[REDACTED]`.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(Option<SecretString>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value: String = value.into();
        Secret(Some(SecretString::from(value)))
    }

    /// The secret's value, when one is set and not blank.
    pub fn expose(&self) -> Option<&str> {
        self.0
            .as_ref()
            .map(|s| s.expose_secret())
            .filter(|s| !s.trim().is_empty())
    }

    pub fn is_set(&self) -> bool {
        self.expose().is_some()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "[REDACTED]"
        } else {
            "[unset]"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub business: Business,
    pub brand_voice: BrandVoice,
    #[serde(default)]
    pub offers: Vec<Offer>,
    pub policy: Policy,
    pub database: DatabaseSettings,
    pub models: ModelsSettings,
    pub engine: EngineSettings,
    pub owner: OwnerSettings,
    pub telegram: TelegramSettings,
    pub discord: DiscordSettings,
    #[serde(default)]
    pub scheduler: crate::scheduler::SchedulerSettings,
    #[serde(default)]
    pub schedules: std::collections::BTreeMap<String, crate::scheduler::ScheduleConfig>,
    #[serde(default)]
    pub digest: crate::digest::DigestSettings,
    #[serde(default)]
    pub http: crate::http::HttpSettings,
    #[serde(default)]
    pub log: crate::http::LogSettings,
    #[serde(default)]
    pub memory: crate::memory::MemorySettings,
    #[serde(default)]
    pub publish: crate::funnel::PublishSettings,
    #[serde(default)]
    pub events: crate::events::EventSettings,
    #[serde(default)]
    pub email: crate::email::EmailSettings,
    #[serde(default)]
    pub leads: crate::leads::LeadSettings,
    #[serde(default)]
    pub hooks: crate::leads::HookSettings,
    /// `[autonomy]`: each flow's autonomy level (`"flow" = "never"`);
    /// a flow not named is `always`. See [`crate::autonomy`].
    #[serde(default)]
    pub autonomy: std::collections::BTreeMap<String, crate::autonomy::Level>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Business {
    pub name: String,
    pub owner: String,
    pub timezone: String,
    #[serde(default)]
    pub website: String,
    #[serde(default)]
    pub founded: Option<u16>,
    // POLICY HOOK: the business's own contact details, never redacted.
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct BrandVoice {
    pub summary: String,
    #[serde(default, rename = "do")]
    pub dos: Vec<String>,
    #[serde(default)]
    pub dont: Vec<String>,
    // POLICY HOOK: forbidden_words, max_exclamation_marks.
    #[serde(flatten)]
    pub rules: crate::policy::BrandRules,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Offer {
    pub name: String,
    #[serde(default)]
    pub price_eur: Option<u32>,
    #[serde(default)]
    pub price_eur_per_month: Option<u32>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub minimum_months: Option<u32>,
    #[serde(default)]
    pub includes: Vec<String>,
    // POLICY HOOK: extras, discounts, deposit_percent.
    #[serde(flatten)]
    pub pricing: crate::policy::OfferPricing,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Policy {
    #[serde(default)]
    pub approval_required_for: Vec<String>,
    #[serde(default)]
    pub never_share: Vec<String>,
    pub daily_budget_usd: f64,
    pub monthly_budget_usd: f64,
    // POLICY HOOK: pii_kinds, never_share_terms, allowed_link_domains,
    // own_contacts, rate_limits.
    #[serde(flatten)]
    pub guard: crate::policy::PolicySettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// Empty: SQLite at `<home>/data/soloist.db`. A secret: a PostgreSQL
    /// URL carries its password (`user:pass@` or `?password=`).
    pub url: Secret,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EngineSettings {
    pub lease_secs: f64,
    /// How often a worker renews the lease of the run it executes.
    pub heartbeat_secs: f64,
    pub max_input_chars: usize,
}

/// The owner's own accounts, one per platform. The owner may always act
/// (without being listed in `allowed_user_ids`), and whatever the owner does,
/// on any platform, is recorded under one name: `business.owner`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OwnerSettings {
    #[serde(default, deserialize_with = "one_id")]
    pub telegram_user_id: String,
    #[serde(default, deserialize_with = "one_id")]
    pub discord_user_id: String,
}

impl OwnerSettings {
    /// Whether `user_id` is the owner's account on a chat platform. (The
    /// terminal has no accounts: `soloist chat` is the owner and says so.)
    pub fn is_owner(&self, platform: Platform, user_id: &str) -> bool {
        let id = match platform {
            Platform::Console | Platform::Email => return false,
            Platform::Telegram => &self.telegram_user_id,
            Platform::Discord => &self.discord_user_id,
        };
        !id.is_empty() && id == user_id
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelegramSettings {
    pub token: Secret,
    /// The Bot API base URL: the public one, a self-hosted Bot API server,
    /// or a test double.
    pub api_url: String,
    /// Who may drive flows and press buttons (owner first).
    #[serde(deserialize_with = "string_list")]
    pub allowed_user_ids: Vec<String>,
    /// Group chats the bot works in; private chats with allowed users
    /// always count, any other group is ignored.
    #[serde(default, deserialize_with = "string_list")]
    pub allowed_chat_ids: Vec<String>,
    /// Hours a received update's raw payload is kept (for a restart to
    /// handle what was not finished); after that only its audit row stays.
    #[serde(default = "default_keep_payload_hours")]
    pub keep_payload_hours: u32,
    /// Telegram's delivery limits (1 message/s per chat, 30/s in all, 20 a
    /// minute per group). Off only for benchmarks against a fake server.
    pub rate_limits: bool,
    /// How updates arrive: long polling (the default, nothing to expose)
    /// or a webhook behind a reverse proxy.
    pub mode: TelegramMode,
    /// How long one `getUpdates` waits for news, in seconds (polling).
    pub poll_timeout_secs: u32,
    /// The public HTTPS URL Telegram posts updates to (webhook mode); its
    /// path is the route soloist serves.
    pub webhook_url: String,
    /// Deprecated alias (one release): the webhook's own listener, used
    /// only when `http.listen` is empty (then the webhook is served there).
    pub webhook_listen: String,
    /// Sent by Telegram in `X-Telegram-Bot-Api-Secret-Token` with every
    /// update; requests without it are refused. 1-256 of `A-Za-z0-9_-`.
    pub webhook_secret: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    Polling,
    Webhook,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DiscordSettings {
    pub token: Secret,
    /// The REST base URL; the gateway URL comes from its `/gateway/bot`.
    pub api_url: String,
    #[serde(deserialize_with = "string_list")]
    pub allowed_user_ids: Vec<String>,
    /// Guild channels the bot works in; DMs with allowed users always
    /// count, any other channel is ignored.
    #[serde(default, deserialize_with = "string_list")]
    pub allowed_channel_ids: Vec<String>,
    /// Hours a received event's raw payload is kept (see the Telegram
    /// setting of the same name).
    #[serde(default = "default_keep_payload_hours")]
    pub keep_payload_hours: u32,
    /// Register slash commands in this guild only (instant); empty: global.
    pub guild_id: String,
    /// Discord's delivery limits (5 messages per 5 s per channel, 50
    /// requests/s). Off only for benchmarks against a fake server.
    pub rate_limits: bool,
}

fn default_keep_payload_hours() -> u32 {
    24
}

/// A list (of user ids, of models), from a TOML array (`[111, "222"]`) or
/// a comma-separated string, as environment variables give it
/// (`SOLOIST__TELEGRAM__ALLOWED_USER_IDS=111,222`).
fn string_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(i64),
        Text(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        List(Vec<Id>),
        One(Id),
    }
    let text = |id: Id| match id {
        Id::Number(n) => vec![n.to_string()],
        Id::Text(t) => t
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    };
    Ok(match Ids::deserialize(deserializer)? {
        Ids::List(ids) => ids.into_iter().flat_map(text).collect(),
        Ids::One(id) => text(id),
    })
}

/// One user id (a number or a string), or none (empty).
fn one_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let mut ids = string_list(deserializer)?;
    match ids.len() {
        0 => Ok(String::new()),
        1 => Ok(ids.remove(0)),
        _ => Err(serde::de::Error::custom("expected one user id")),
    }
}

/// Where settings come from; [`LoadOptions::from_process`] is what the binary
/// uses, tests build one by hand.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The directory holding `config/`, `prompts/` and `data/`.
    pub home: PathBuf,
    /// An extra config file (`--config` / `SOLOIST_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// Read environment variables (off in tests so they stay hermetic).
    pub read_environment: bool,
}

impl LoadOptions {
    pub fn from_process(home: PathBuf, config_file: Option<PathBuf>) -> Self {
        LoadOptions {
            home,
            config_file,
            read_environment: true,
        }
    }
}

impl Settings {
    pub fn load(options: &LoadOptions) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_CONFIG));
        let home_file = options.home.join("config/default.toml");
        if home_file.is_file() {
            figment = figment.merge(Toml::file_exact(&home_file));
        }
        if let Some(path) = &options.config_file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile { path: path.clone() });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        if options.read_environment {
            figment = merge_environment(figment);
        }
        let settings: Settings = figment
            .extract()
            .map_err(|error| ConfigError::Invalid(describe_figment_error(error)))?;
        settings.models.validate().map_err(ConfigError::Invalid)?;
        settings.timezone()?;
        Ok(settings)
    }

    /// The business's time zone: its days and months are the budget's.
    pub fn timezone(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.business.timezone.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "business.timezone: '{}' is not an IANA time zone (e.g. Europe/Lisbon)",
                self.business.timezone
            ))
        })
    }

    /// The database URL to use: the configured one, or the embedded SQLite
    /// file under `home`. Pass it to the driver only; show it through
    /// [`redact_url`].
    pub fn database_url(&self, home: &Path) -> String {
        match self.database.url.expose() {
            None => format!(
                "sqlite://{}?mode=rwc",
                home.join("data/soloist.db").display()
            ),
            Some(url) => url.trim().to_string(),
        }
    }
}

fn merge_environment(mut figment: Figment) -> Figment {
    for (variable, key) in ECOSYSTEM_VARIABLES {
        figment = figment.merge(Env::raw().only(&[variable]).map(move |_| key.into()));
    }
    figment.merge(Env::prefixed("SOLOIST__").split("__"))
}

/// One line per problem: figment already says the key, what it found, what
/// was expected and in which file.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_with_file(contents: &str) -> (tempfile::TempDir, LoadOptions) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.toml");
        std::fs::write(&file, contents).unwrap();
        let options = LoadOptions {
            home: dir.path().to_path_buf(),
            config_file: Some(file),
            read_environment: false,
        };
        (dir, options)
    }

    #[test]
    fn built_in_defaults_load_without_any_file() {
        let settings = Settings::load(&LoadOptions::default()).unwrap();
        assert_eq!(settings.business.name, "Harbor & Pine Studio");
        assert!(!settings.models.any_configured());
    }

    #[test]
    fn a_wrong_type_names_the_file_the_key_and_the_expectation() {
        let (_dir, options) = options_with_file("[engine]\nlease_secs = \"soon\"\n");
        let message = Settings::load(&options).unwrap_err().to_string();
        assert!(message.contains("lease_secs"), "{message}");
        assert!(message.contains("mine.toml"), "{message}");
        assert!(message.contains("expected"), "{message}");
    }

    #[test]
    fn a_file_overrides_only_the_keys_it_names() {
        let (_dir, options) = options_with_file("[business]\nname = \"Acme\"\n");
        let settings = Settings::load(&options).unwrap();
        assert_eq!(settings.business.name, "Acme");
        assert_eq!(settings.business.owner, "Maya Okafor");
    }

    #[test]
    fn allowed_user_ids_read_lists_numbers_and_comma_strings() {
        let (_dir, options) = options_with_file(
            "[telegram]\nallowed_user_ids = [111, \"222\"]\n[discord]\nallowed_user_ids = \"333, 444\"\n",
        );
        let settings = Settings::load(&options).unwrap();
        assert_eq!(settings.telegram.allowed_user_ids, ["111", "222"]);
        assert_eq!(settings.discord.allowed_user_ids, ["333", "444"]);
    }

    #[test]
    fn group_chats_and_guild_channels_are_closed_unless_listed() {
        let closed = Settings::load(&LoadOptions::default()).unwrap();
        assert!(closed.telegram.allowed_chat_ids.is_empty());
        assert!(closed.discord.allowed_channel_ids.is_empty());
        let (_dir, options) = options_with_file(
            "[telegram]\nallowed_chat_ids = [-100123]\n[discord]\nallowed_channel_ids = \"77, 78\"\n",
        );
        let listed = Settings::load(&options).unwrap();
        assert_eq!(listed.telegram.allowed_chat_ids, ["-100123"]);
        assert_eq!(listed.discord.allowed_channel_ids, ["77", "78"]);
    }

    #[test]
    fn a_tier_model_without_a_price_is_a_start_up_error() {
        let (_dir, options) =
            options_with_file("[models.tiers]\nquality = [\"openai/gpt-9-imaginary\"]\n");
        let message = Settings::load(&options).unwrap_err().to_string();
        assert!(
            message.contains("'openai/gpt-9-imaginary' has no price"),
            "{message}"
        );
    }

    #[test]
    fn a_tier_chain_reads_from_a_comma_string_as_the_environment_gives_it() {
        let (_dir, options) = options_with_file(
            "[models.tiers]\nfast = \"openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest\"\n",
        );
        let settings = Settings::load(&options).unwrap();
        let fast: Vec<String> = settings
            .models
            .tiers
            .fast
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(
            fast,
            ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"]
        );
    }

    #[test]
    fn the_owner_is_one_account_id_per_chat_platform() {
        let (_dir, options) =
            options_with_file("[owner]\ntelegram_user_id = 111\ndiscord_user_id = \"222\"\n");
        let owner = Settings::load(&options).unwrap().owner;
        assert!(owner.is_owner(Platform::Telegram, "111"));
        assert!(owner.is_owner(Platform::Discord, "222"));
        assert!(!owner.is_owner(Platform::Discord, "111"));
        assert!(!owner.is_owner(Platform::Console, "111"));
        let unset = Settings::load(&LoadOptions::default()).unwrap().owner;
        assert!(!unset.is_owner(Platform::Discord, ""));
    }

    #[test]
    fn the_database_url_is_a_secret_that_never_prints() {
        let (_dir, options) =
            options_with_file("[database]\nurl = \"postgres://maya:hunter2secret@db/soloist\"\n");
        let settings = Settings::load(&options).unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2secret"), "{printed}");
        assert_eq!(
            settings.database_url(Path::new(".")),
            "postgres://maya:hunter2secret@db/soloist"
        );
    }

    #[test]
    fn secrets_never_print() {
        let (_dir, options) =
            options_with_file("[models.providers.openai]\napi_key = \"sk-very-secret\"\n");
        let settings = Settings::load(&options).unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("sk-very-secret"));
        assert!(printed.contains("[REDACTED]"));
        assert_eq!(
            settings.models.providers["openai"].api_key.expose(),
            Some("sk-very-secret")
        );
    }
}
