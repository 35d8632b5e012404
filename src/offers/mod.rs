//! Productized offers: `/offer Forno Velho, Brand Sprint, start in January`.
//!
//! The price, the deposit and the terms come from `[[offers]]` in the
//! settings, computed here ([`Quote`]); no model writes one. The operator
//! first reviews the key variables (price, discount within
//! `policy.max_discount`, start date, deposit) on a card with buttons
//! ([`review`]); nothing is made until Confirm. Confirm starts the `offer`
//! flow (`config/flows/offer.toml`): the `quote` step journals the
//! confirmed terms, the model writes only the scope and the cover note, the
//! `proposal` step renders `prompts/proposal.md` as Markdown and as a PDF
//! ([`pdf`]) and checks every amount the model wrote against the quote, and
//! the approval message carries the PDF. The client's e-mail address is the
//! `email=` option of `/offer` (see README, Productized offers).

pub mod pdf;
pub mod review;
pub mod step;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::config::Offer;

/// What `/offer` could not accept, as the sentence the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error(
        "Tell me the client and the offer, e.g. /offer Forno Velho, Brand Sprint, start in January, email=ana@fornovelho.example. The offers: {0}."
    )]
    Usage(String),
    #[error("There is no offer called '{asked}'. The offers are: {known}.")]
    UnknownOffer { asked: String, known: String },
    #[error(
        "A {asked}% discount is above the {cap}% cap (policy.max_discount), so it is refused; the offer keeps its price. Ask for {cap}% or less."
    )]
    DiscountAboveCap { asked: u32, cap: u32 },
    #[error("'{0}' is not a discount I can read; write discount=5 for 5%.")]
    BadDiscount(String),
    #[error(
        "'{0}' is not a start I can read; write 'start in January', 'start next week' or 'start 2027-01-04'."
    )]
    BadStart(String),
    #[error("The start date {0} is in the past; pick a later one.")]
    StartInPast(NaiveDate),
    #[error("'{0}' is not an e-mail address.")]
    BadEmail(String),
    #[error("I don't understand '{0}' in this offer; options are start …, email=… and discount=….")]
    UnknownOption(String),
}

/// `/offer`'s arguments, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRequest {
    pub client: String,
    /// The configured offer's name, as the settings spell it.
    pub offer: String,
    pub start: NaiveDate,
    pub email: Option<String>,
    pub discount_percent: u32,
}

/// The names of the configured offers, for messages.
pub fn offer_names(offers: &[Offer]) -> String {
    let names: Vec<&str> = offers.iter().map(|o| o.name.as_str()).collect();
    if names.is_empty() {
        "none configured ([[offers]] in the settings)".into()
    } else {
        names.join(", ")
    }
}

/// The configured offer called `name` (any case).
pub fn find_offer<'a>(offers: &'a [Offer], name: &str) -> Option<&'a Offer> {
    offers
        .iter()
        .find(|o| o.name.trim().eq_ignore_ascii_case(name.trim()))
}

/// Parses `CLIENT, OFFER[, start …][, email=…][, discount=…]`. `today` is the
/// business's date, for "start in January".
pub fn parse_request(
    args: &str,
    offers: &[Offer],
    max_discount: u32,
    today: NaiveDate,
) -> Result<OfferRequest, OfferError> {
    let mut names = Vec::new();
    let mut start = None;
    let mut email = None;
    let mut discount = 0;
    for part in args.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_lowercase();
        if let Some(value) = option(part, "email") {
            if !looks_like_email(value) {
                return Err(OfferError::BadEmail(value.to_string()));
            }
            email = Some(value.to_string());
        } else if let Some(value) = option(part, "discount") {
            discount = parse_discount(value)?;
        } else if lower.starts_with("start") {
            start = Some(parse_start(part, today)?);
        } else if part.contains('=') {
            return Err(OfferError::UnknownOption(part.to_string()));
        } else {
            names.push(part.to_string());
        }
    }
    let [client, asked] = names.as_slice() else {
        return Err(OfferError::Usage(offer_names(offers)));
    };
    let offer = find_offer(offers, asked).ok_or_else(|| OfferError::UnknownOffer {
        asked: asked.clone(),
        known: offer_names(offers),
    })?;
    check_discount(discount, max_discount)?;
    Ok(OfferRequest {
        client: client.clone(),
        offer: offer.name.clone(),
        start: start.unwrap_or_else(|| default_start(today)),
        email,
        discount_percent: discount,
    })
}

/// Refuses a discount above the cap: a sentence, nothing changed.
pub fn check_discount(percent: u32, cap: u32) -> Result<(), OfferError> {
    if percent > cap {
        Err(OfferError::DiscountAboveCap {
            asked: percent,
            cap,
        })
    } else {
        Ok(())
    }
}

/// `key=value` or `key: value`, the key in any case.
fn option<'a>(part: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = part.split_once(['=', ':'])?;
    k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
}

fn looks_like_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>')
}

fn parse_discount(value: &str) -> Result<u32, OfferError> {
    value
        .trim()
        .trim_start_matches(['-', '−'])
        .trim_end_matches('%')
        .trim()
        .parse::<u32>()
        .map_err(|_| OfferError::BadDiscount(value.to_string()))
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// "start in January" → the first Monday of the next January; "start next
/// week" → next Monday; "start 2027-01-04" → that date.
fn parse_start(part: &str, today: NaiveDate) -> Result<NaiveDate, OfferError> {
    let lower = part.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "start" | "starting" | "starts" | "in" | "on"))
        .collect();
    let bad = || OfferError::BadStart(part.to_string());
    let date = match words.as_slice() {
        ["next", "week"] => next_monday(today),
        [word] => {
            if let Ok(date) = NaiveDate::parse_from_str(word, "%Y-%m-%d") {
                date
            } else {
                let month = MONTHS
                    .iter()
                    .position(|m| m.starts_with(word) && word.len() >= 3)
                    .ok_or_else(bad)?;
                first_monday_of_next(month as u32 + 1, today).ok_or_else(bad)?
            }
        }
        _ => return Err(bad()),
    };
    if date < today {
        return Err(OfferError::StartInPast(date));
    }
    Ok(date)
}

fn next_monday(today: NaiveDate) -> NaiveDate {
    let days = 7 - today.weekday().num_days_from_monday();
    today + Duration::days(i64::from(days))
}

/// With no start given: the Monday after next, time to sign and pay the
/// deposit.
pub fn default_start(today: NaiveDate) -> NaiveDate {
    next_monday(today) + Duration::days(7)
}

/// The first Monday of `month` on or after today (this year or the next).
fn first_monday_of_next(month: u32, today: NaiveDate) -> Option<NaiveDate> {
    [today.year(), today.year() + 1]
        .into_iter()
        .filter_map(|year| NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Mon, 1))
        .find(|date| *date >= today)
}

/// The other start dates the review card offers: a week and two weeks
/// after the requested one.
pub fn start_options(start: NaiveDate) -> [NaiveDate; 3] {
    [start, start + Duration::days(7), start + Duration::days(14)]
}

/// Every figure of an offer, computed from `[[offers]]` and the reviewed
/// discount. Whole euros, rounded half up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub offer: String,
    /// The price before any discount (a retainer: its minimum term).
    pub list_price_eur: u64,
    pub discount_percent: u32,
    pub discount_eur: u64,
    pub price_eur: u64,
    pub deposit_percent: u32,
    pub deposit_eur: u64,
    pub balance_eur: u64,
    /// A retainer's monthly fee (after the discount) and minimum months.
    pub per_month_eur: Option<u64>,
    pub minimum_months: Option<u32>,
    pub duration: Option<String>,
    pub includes: Vec<String>,
}

impl Quote {
    pub fn new(offer: &Offer, discount_percent: u32) -> Quote {
        let months = offer.minimum_months.unwrap_or(1).max(1);
        let monthly = offer.price_eur_per_month.map(u64::from);
        let list = match (offer.price_eur, monthly) {
            (Some(price), _) => u64::from(price),
            (None, Some(per_month)) => per_month * u64::from(months),
            (None, None) => 0,
        };
        let discounted = |amount: u64| percent_of(amount, 100 - discount_percent.min(100));
        let price = discounted(list);
        let deposit_percent = offer.pricing.deposit_percent.unwrap_or(0);
        let deposit = percent_of(price, deposit_percent);
        Quote {
            offer: offer.name.clone(),
            list_price_eur: list,
            discount_percent,
            discount_eur: list - price,
            price_eur: price,
            deposit_percent,
            deposit_eur: deposit,
            balance_eur: price - deposit,
            per_month_eur: monthly.map(discounted),
            minimum_months: offer.price_eur_per_month.and(offer.minimum_months),
            duration: offer.duration.clone(),
            includes: offer.includes.clone(),
        }
    }

    /// The amounts this quote states: any other amount in a proposal is
    /// not this offer's.
    pub fn amounts(&self) -> Vec<u64> {
        let mut amounts = vec![
            self.list_price_eur,
            self.price_eur,
            self.discount_eur,
            self.deposit_eur,
            self.balance_eur,
        ];
        amounts.extend(self.per_month_eur);
        amounts.retain(|a| *a > 0);
        amounts
    }

    /// "EUR 4,800" (or "EUR 4,560 (EUR 4,800 less 5%)").
    pub fn price_line(&self) -> String {
        if self.discount_percent == 0 {
            eur(self.price_eur)
        } else {
            format!(
                "{} ({} less {}%)",
                eur(self.price_eur),
                eur(self.list_price_eur),
                self.discount_percent
            )
        }
    }

    /// The payment terms, in one sentence.
    pub fn terms_line(&self) -> String {
        match (self.per_month_eur, self.minimum_months) {
            (Some(per_month), Some(months)) => format!(
                "{} a month, invoiced monthly in advance, for at least {months} months.",
                eur(per_month)
            ),
            _ if self.deposit_percent > 0 => format!(
                "A {}% deposit of {} on acceptance secures the start date; the balance of {} is due on delivery.",
                self.deposit_percent,
                eur(self.deposit_eur),
                eur(self.balance_eur)
            ),
            _ => format!("{} on delivery.", eur(self.price_eur)),
        }
    }
}

/// `amount × percent / 100`, rounded half up, in whole euros.
fn percent_of(amount: u64, percent: u32) -> u64 {
    (amount * u64::from(percent) + 50) / 100
}

/// "EUR 4,800".
pub fn eur(amount: u64) -> String {
    let digits = amount.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("EUR {grouped}")
}

/// Amounts in a model's text that this quote does not state: each a
/// sentence for the approval message. The model was told to state none.
pub fn price_flags(quote: &Quote, part: &str, text: &str) -> Vec<String> {
    let allowed = quote.amounts();
    crate::policy::amounts_in(text)
        .into_iter()
        .filter(|amount| !allowed.contains(amount))
        .map(|amount| {
            format!(
                "the {part} states {}, which is not this offer's price ({}: {}; deposit {})",
                eur(amount),
                quote.offer,
                eur(quote.price_eur),
                eur(quote.deposit_eur)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_fixtures::default_settings;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
    }

    fn parse(args: &str) -> Result<OfferRequest, OfferError> {
        parse_request(args, &default_settings().offers, 10, today())
    }

    #[test]
    fn the_seed_request_names_client_offer_and_the_first_monday_of_january() {
        let request = parse("Forno Velho, brand sprint, start in January").unwrap();
        assert_eq!(request.client, "Forno Velho");
        assert_eq!(request.offer, "Brand Sprint");
        assert_eq!(request.start, NaiveDate::from_ymd_opt(2027, 1, 4).unwrap());
        assert_eq!(request.discount_percent, 0);
    }

    #[test]
    fn an_unknown_offer_is_refused_with_the_offers_listed() {
        let error = parse("Forno Velho, Logo Blitz").unwrap_err().to_string();
        assert!(error.contains("'Logo Blitz'"), "{error}");
        assert!(
            error.contains("Brand Sprint, Website Audit, Design Retainer"),
            "{error}"
        );
    }

    #[test]
    fn a_discount_above_the_cap_is_refused_and_one_within_it_kept() {
        let error = parse("Forno Velho, Brand Sprint, discount=15%").unwrap_err();
        assert_eq!(error, OfferError::DiscountAboveCap { asked: 15, cap: 10 });
        assert_eq!(
            parse("Forno Velho, Brand Sprint, discount=10")
                .unwrap()
                .discount_percent,
            10
        );
    }

    #[test]
    fn the_quote_follows_the_settings_deposit_and_discount() {
        let settings = default_settings();
        let sprint = find_offer(&settings.offers, "Brand Sprint").unwrap();
        let quote = Quote::new(sprint, 5);
        assert_eq!(quote.list_price_eur, 4800);
        assert_eq!(quote.price_eur, 4560);
        assert_eq!(quote.deposit_eur, 2280);
        assert_eq!(quote.balance_eur, 2280);
        let retainer = find_offer(&settings.offers, "Design Retainer").unwrap();
        let quote = Quote::new(retainer, 0);
        assert_eq!(
            (quote.list_price_eur, quote.per_month_eur),
            (6000, Some(2000))
        );
    }

    #[test]
    fn a_model_amount_that_is_not_the_quotes_is_flagged() {
        let settings = default_settings();
        let sprint = find_offer(&settings.offers, "Brand Sprint").unwrap();
        let quote = Quote::new(sprint, 0);
        assert!(price_flags(&quote, "scope", "Five days, EUR 4,800 in all.").is_empty());
        let flags = price_flags(&quote, "scope", "All this for only 3900 euros.");
        assert_eq!(flags.len(), 1);
        assert!(flags[0].contains("EUR 3,900"), "{}", flags[0]);
        assert!(flags[0].contains("Brand Sprint: EUR 4,800"), "{}", flags[0]);
        assert_eq!(eur(1234567), "EUR 1,234,567");
    }
}
