//! Checks on a draft before it is offered: things it must not share
//! (`never_share` items and terms, secrets from the settings), links to
//! domains nobody allowed, the brand's machine-checkable rules, and prices
//! that the configured offers cannot explain. Each finding is a [`Flag`]
//! shown on the approval message; the draft itself is never rewritten.

use std::sync::LazyLock;

use regex::Regex;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Offer;

/// One finding, in a sentence the operator reads on the approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub kind: FlagKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    NeverShare,
    Secret,
    Link,
    ForbiddenWord,
    Exclamations,
    Price,
    Injection,
    /// Personal data the recipient or the operator did not supply.
    Pii,
    /// A client named without their consent.
    Client,
    /// A finding of the fast-tier review ([`super::review`]).
    Review,
}

impl FlagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::NeverShare => "never_share",
            FlagKind::Secret => "secret",
            FlagKind::Link => "link",
            FlagKind::ForbiddenWord => "forbidden_word",
            FlagKind::Exclamations => "exclamations",
            FlagKind::Price => "price",
            FlagKind::Injection => "injection",
            FlagKind::Pii => "pii",
            FlagKind::Client => "client",
            FlagKind::Review => "review",
        }
    }
}

/// What a draft is checked against, built once from the settings.
pub struct DraftRules {
    pub never_share: Vec<String>,
    pub secrets: Vec<SecretString>,
    pub allowed_domains: Vec<String>,
    pub forbidden_words: Vec<String>,
    pub max_exclamation_marks: Option<u32>,
    pub offers: Vec<Offer>,
}

impl std::fmt::Debug for DraftRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftRules")
            .field("never_share", &self.never_share)
            .field("secrets", &self.secrets.len())
            .field("allowed_domains", &self.allowed_domains)
            .field("forbidden_words", &self.forbidden_words)
            .finish()
    }
}

static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:https?://|www\.)([a-z0-9.-]+\.[a-z]{2,})").expect("link pattern")
});
/// An amount in euros: "EUR 4,800", "€900", "4800 euros", "60€".
static AMOUNT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\b(?:eur|euros?)\s?|€\s?)([0-9]{1,3}(?:[.,][0-9]{3})+|[0-9]+)(?:[.,][0-9]{1,2})?\b|\b([0-9]{1,3}(?:[.,][0-9]{3})+|[0-9]+)(?:[.,][0-9]{1,2})?\s?(?:€|\beur\b|\beuros?\b)")
        .expect("amount pattern")
});

/// Every euro amount `text` states, in whole euros ("EUR 4,800", "€900",
/// "3900 euros"), in order: for checks that know the one right figure
/// (an offer's quote, `crate::offers`).
pub fn amounts_in(text: &str) -> Vec<u64> {
    AMOUNT
        .captures_iter(text)
        .filter_map(|capture| capture.get(1).or_else(|| capture.get(2)))
        .filter_map(|digits| digits.as_str().replace([',', '.'], "").parse().ok())
        .collect()
}

/// True when `phrase` appears in `text` as whole words, ignoring case
/// ("Casa Lume" in "the casa lume team", not "Lume" in "Lumen").
pub fn mentions(text: &str, phrase: &str) -> bool {
    let phrase = phrase.trim();
    if phrase.is_empty() {
        return false;
    }
    let pattern = format!(r"(?i)(^|[^\w]){}($|[^\w])", regex::escape(phrase));
    Regex::new(&pattern).is_ok_and(|re| re.is_match(text))
}

impl DraftRules {
    /// Every flag `draft` earns, in a stable order.
    pub fn check(&self, draft: &str) -> Vec<Flag> {
        let mut flags = Vec::new();
        self.check_never_share(draft, &mut flags);
        self.check_secrets(draft, &mut flags);
        self.check_links(draft, &mut flags);
        self.check_brand(draft, &mut flags);
        self.check_prices(draft, &mut flags);
        flags
    }

    fn check_never_share(&self, draft: &str, flags: &mut Vec<Flag>) {
        let lower = draft.to_lowercase();
        for item in &self.never_share {
            if !item.trim().is_empty() && lower.contains(&item.to_lowercase()) {
                flags.push(Flag {
                    kind: FlagKind::NeverShare,
                    detail: format!("it mentions '{item}', which policy says is never shared"),
                });
            }
        }
    }

    fn check_secrets(&self, draft: &str, flags: &mut Vec<Flag>) {
        let leaked = self
            .secrets
            .iter()
            .map(|s| s.expose_secret())
            .any(|s| s.len() >= 8 && draft.contains(s));
        if leaked {
            flags.push(Flag {
                kind: FlagKind::Secret,
                detail: "it contains a key or token from the settings".into(),
            });
        }
    }

    fn check_links(&self, draft: &str, flags: &mut Vec<Flag>) {
        for capture in LINK.captures_iter(draft) {
            let host = capture[1].trim_end_matches('.').to_lowercase();
            let allowed = self
                .allowed_domains
                .iter()
                .any(|d| host == *d || host.ends_with(&format!(".{d}")));
            if !allowed {
                flags.push(Flag {
                    kind: FlagKind::Link,
                    detail: format!("it links to {host}, which is not an allowed domain"),
                });
            }
        }
    }

    fn check_brand(&self, draft: &str, flags: &mut Vec<Flag>) {
        let words: Vec<String> = draft
            .split(|c: char| !c.is_alphanumeric() && c != '-')
            .map(str::to_lowercase)
            .collect();
        for forbidden in &self.forbidden_words {
            let forbidden = forbidden.to_lowercase();
            let used = words.iter().any(|w| {
                *w == forbidden || (w.starts_with(&forbidden) && w.len() <= forbidden.len() + 3)
            });
            if used {
                flags.push(Flag {
                    kind: FlagKind::ForbiddenWord,
                    detail: format!("it uses '{forbidden}', a word the brand voice forbids"),
                });
            }
        }
        let marks = draft.matches('!').count() as u32;
        if let Some(max) = self.max_exclamation_marks
            && marks > max
        {
            flags.push(Flag {
                kind: FlagKind::Exclamations,
                detail: format!("it has {marks} exclamation marks; the brand voice allows {max}"),
            });
        }
    }

    fn check_prices(&self, draft: &str, flags: &mut Vec<Flag>) {
        if self.offers.is_empty() {
            return;
        }
        let allowed = derivable_amounts(&self.offers);
        for capture in AMOUNT.captures_iter(draft) {
            let Some(digits) = capture.get(1).or_else(|| capture.get(2)) else {
                continue;
            };
            let Ok(amount) = digits.as_str().replace([',', '.'], "").parse::<f64>() else {
                continue;
            };
            if allowed.iter().any(|a| (a - amount).abs() < 0.5) {
                continue;
            }
            let offer = nearest_offer(
                &self.offers,
                draft,
                capture.get(0).map_or(0, |m| m.start()),
                amount,
            );
            flags.push(Flag {
                kind: FlagKind::Price,
                detail: format!(
                    "EUR {} is not a configured price ({})",
                    amount as u64,
                    describe_price(offer)
                ),
            });
        }
    }
}

/// Every amount the offers explain: base prices (and a retainer's
/// minimum), extras (alone, and added to the base), discounts and
/// deposits of those.
fn derivable_amounts(offers: &[Offer]) -> Vec<f64> {
    let mut amounts = Vec::new();
    for offer in offers {
        let mut bases = Vec::new();
        if let Some(p) = offer.price_eur {
            bases.push(f64::from(p));
        }
        if let Some(p) = offer.price_eur_per_month {
            bases.push(f64::from(p));
            if let Some(months) = offer.minimum_months {
                bases.push(f64::from(p * months));
            }
        }
        for extra in &offer.pricing.extras {
            amounts.push(f64::from(extra.price_eur));
            for base in bases.clone() {
                bases.push(base + f64::from(extra.price_eur));
            }
        }
        let mut derived = bases.clone();
        for base in &bases {
            for discount in &offer.pricing.discounts {
                let factor = 1.0 - f64::from(discount.percent) / 100.0;
                derived.push(base * factor);
                derived.push(base - base * factor);
            }
        }
        if let Some(deposit) = offer.pricing.deposit_percent {
            let share = f64::from(deposit) / 100.0;
            let with_deposits: Vec<f64> = derived
                .iter()
                .flat_map(|d| [d * share, d * (1.0 - share)])
                .collect();
            derived.extend(with_deposits);
        }
        amounts.extend(derived);
    }
    amounts
}

/// The offer the amount is most likely about: the last one named before
/// it in the draft, else the one whose price is closest.
fn nearest_offer<'a>(offers: &'a [Offer], draft: &str, at: usize, amount: f64) -> &'a Offer {
    let before = draft[..at].to_lowercase();
    let named = offers
        .iter()
        .filter_map(|o| before.rfind(&o.name.to_lowercase()).map(|i| (i, o)))
        .max_by_key(|(i, _)| *i)
        .map(|(_, o)| o);
    named.unwrap_or_else(|| {
        offers
            .iter()
            .min_by(|a, b| {
                let d = |o: &Offer| (base_price(o) - amount).abs();
                d(a).total_cmp(&d(b))
            })
            .unwrap_or(&offers[0])
    })
}

fn base_price(offer: &Offer) -> f64 {
    f64::from(offer.price_eur.or(offer.price_eur_per_month).unwrap_or(0))
}

fn describe_price(offer: &Offer) -> String {
    match (offer.price_eur, offer.price_eur_per_month) {
        (Some(p), _) => format!("{}: EUR {p}", offer.name),
        (None, Some(p)) => format!("{}: EUR {p} a month", offer.name),
        (None, None) => format!("{}: no price set", offer.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_fixtures::{default_settings, lines};

    fn rules() -> DraftRules {
        super::super::Guard::new(&default_settings()).unwrap().rules
    }

    fn kinds(draft: &str) -> Vec<FlagKind> {
        rules().check(draft).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_forbidden_word_is_flagged_even_inflected() {
        assert_eq!(kinds("Our synergy is real."), [FlagKind::ForbiddenWord]);
        assert_eq!(kinds("A game-changing audit."), [FlagKind::ForbiddenWord]);
        assert_eq!(kinds("We leveraged design."), [FlagKind::ForbiddenWord]);
    }

    #[test]
    fn a_second_exclamation_mark_is_flagged() {
        assert!(kinds("Hello!").is_empty());
        assert_eq!(kinds("Hello! Again!"), [FlagKind::Exclamations]);
    }

    #[test]
    fn a_wrong_price_is_flagged_with_the_configured_figure_beside_it() {
        let flags = rules().check("The Brand Sprint now costs EUR 150.");
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert!(flags[0].detail.contains("EUR 150"), "{}", flags[0].detail);
        assert!(
            flags[0].detail.contains("Brand Sprint: EUR 4800"),
            "{}",
            flags[0].detail
        );
    }

    #[test]
    fn prices_derived_from_the_offers_are_accepted() {
        for draft in [
            "The Brand Sprint is EUR 4,800; the deposit is EUR 2,400.",
            "Non-profits pay EUR 4080 for a Brand Sprint.",
            "Audit: 900 € plus EUR 60 per extra page, so EUR 960 for 13 pages.",
            "The retainer is EUR 2000 a month, EUR 6000 for the minimum three months.",
        ] {
            assert!(
                kinds(draft).is_empty(),
                "{draft}: {:?}",
                rules().check(draft)
            );
        }
    }

    #[test]
    fn a_link_outside_the_allowed_domains_is_flagged() {
        assert!(kinds("See https://harborandpine.example/work").is_empty());
        assert!(kinds("See https://www.linkedin.com/in/maya").is_empty());
        assert_eq!(
            kinds("Pay at https://harb0r-pay.example/x"),
            [FlagKind::Link]
        );
    }

    #[test]
    fn never_share_items_and_terms_are_flagged() {
        assert_eq!(
            kinds("From my internal notes: they are slow."),
            [FlagKind::NeverShare]
        );
    }

    #[test]
    fn a_secret_from_the_settings_is_flagged() {
        let mut settings = default_settings();
        settings.telegram.token = crate::config::Secret::new("123456:ABCDEFsecret-token");
        let rules = super::super::Guard::new(&settings).unwrap().rules;
        let flags = rules.check("the token is 123456:ABCDEFsecret-token");
        assert_eq!(flags[0].kind, FlagKind::Secret);
        assert!(!flags[0].detail.contains("ABCDEF"));
    }

    #[test]
    fn at_most_one_of_twenty_clean_drafts_is_flagged() {
        let rules = rules();
        let drafts = lines("clean_drafts.txt");
        assert_eq!(drafts.len(), 20);
        let flagged: Vec<_> = drafts
            .iter()
            .map(|d| (d, rules.check(d)))
            .filter(|(_, f)| !f.is_empty())
            .collect();
        println!(
            "draft checks: {} of {} clean drafts flagged",
            flagged.len(),
            drafts.len()
        );
        assert!(flagged.len() <= 1, "false positives: {flagged:#?}");
    }
}
