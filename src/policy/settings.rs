//! The machine-checkable rules of `[policy]`, `[brand_voice]` and
//! `[[offers]]`, beside the sentences a model reads. They are flattened into
//! the existing config structs so a settings file keeps one `[policy]`.

use serde::{Deserialize, Serialize};

use super::pii::PiiKind;

/// `[policy]`'s guardrail keys (the budget and approval lists stay where
/// they were).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PolicySettings {
    /// Which kinds of personal data are replaced by placeholders before any
    /// model call.
    #[serde(default = "PiiKind::all")]
    pub pii_kinds: Vec<PiiKind>,
    /// Words or phrases that must never appear in a draft (checked as text,
    /// unlike `never_share`'s sentences, which are also checked).
    #[serde(default)]
    pub never_share_terms: Vec<String>,
    /// Domains a draft may link to besides the business's own site.
    #[serde(default)]
    pub allowed_link_domains: Vec<String>,
    /// The business's own contact details (e-mail, phone, address): never
    /// redacted. `business.email`/`phone`/`address` are added at start.
    #[serde(default)]
    pub own_contacts: Vec<String>,
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
    /// The business's clients, by name. When listed, a draft naming one
    /// who is not in `consented_clients` is flagged.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Clients who agreed in writing to be named in public posts.
    #[serde(default)]
    pub consented_clients: Vec<String>,
    /// After a quality-tier draft in a `high-quality` flow, a fast-tier
    /// model reviews it against the brand rules and the never-share list;
    /// its findings are flags on the approval ([`super::review`]).
    #[serde(default = "on")]
    pub fast_review: bool,
    /// Untrusted text the pattern detector did not flag is also classified
    /// by the router tier (one cheap call per origin, costed and audited;
    /// [`super::classifier`]). Off by default.
    #[serde(default)]
    pub injection_classifier: bool,
    /// The largest discount, in percent, an offer may be given (`/offer`);
    /// a larger one is refused with a sentence.
    #[serde(default = "default_max_discount")]
    pub max_discount: u32,
}

fn on() -> bool {
    true
}

fn default_max_discount() -> u32 {
    10
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            pii_kinds: PiiKind::all(),
            never_share_terms: Vec::new(),
            allowed_link_domains: Vec::new(),
            own_contacts: Vec::new(),
            rate_limits: RateLimitSettings::default(),
            clients: Vec::new(),
            consented_clients: Vec::new(),
            fast_review: true,
            injection_classifier: false,
            max_discount: default_max_discount(),
        }
    }
}

/// Requests that start work (a flow, a routed message), per minute, with a
/// burst allowance. 0 turns a limit off.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct RateLimitSettings {
    pub per_user_per_minute: u32,
    pub per_user_burst: u32,
    pub per_flow_per_minute: u32,
    pub per_flow_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            per_user_per_minute: 20,
            per_user_burst: 10,
            per_flow_per_minute: 60,
            per_flow_burst: 30,
        }
    }
}

/// `[brand_voice]`'s checkable rules.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BrandRules {
    /// Whole words a draft must not use (case-insensitive).
    #[serde(default)]
    pub forbidden_words: Vec<String>,
    /// At most this many `!` in one draft; none = no limit.
    #[serde(default)]
    pub max_exclamation_marks: Option<u32>,
}

/// `[[offers]]`'s structured pricing: what an amount in a draft may be
/// derived from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OfferPricing {
    /// Per-unit extras ("each page beyond 12": EUR 60).
    #[serde(default)]
    pub extras: Vec<Extra>,
    /// Standing discounts ("non-profit": 15 %).
    #[serde(default)]
    pub discounts: Vec<Discount>,
    /// The deposit that secures a start date, in percent of the price.
    #[serde(default)]
    pub deposit_percent: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Extra {
    pub name: String,
    pub price_eur: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Discount {
    pub name: String,
    pub percent: u32,
}
