//! The key-variable review of an offer, before anything is made: a card
//! with the price, discount, deposit and start date, and buttons to change
//! the discount (within `policy.max_discount`), move the start, confirm or
//! cancel. Each press answers with a fresh card; Confirm hands the terms to
//! the `offer` flow. The controller adapts these to its handlers
//! (`controller/offers.rs`).

use chrono::{Duration, NaiveDate, Utc};

use super::{OfferError, OfferRequest, Quote, check_discount, eur, find_offer};
use crate::config::Settings;
use crate::domain::{Action, ButtonToken, ChatRef, OfferChange, Outbound, RunId, action_buttons};
use crate::store::{OfferDraft, StoreResult, Tx};

/// The discounts the card offers, in percent; those above the cap are not
/// shown (and refused if pressed anyway).
const DISCOUNT_CHOICES: [u32; 2] = [5, 10];

/// The business's date today, for start dates.
pub fn business_today(settings: &Settings) -> NaiveDate {
    let now = Utc::now();
    match settings.business.timezone.parse::<chrono_tz::Tz>() {
        Ok(zone) => now.with_timezone(&zone).date_naive(),
        Err(_) => now.date_naive(),
    }
}

/// A new offer under review, from `/offer`'s request.
pub fn new_draft(request: &OfferRequest, chat: &ChatRef, requested_by: &str) -> OfferDraft {
    OfferDraft {
        id: uuid::Uuid::new_v4().simple().to_string(),
        chat: chat.clone(),
        requested_by: requested_by.to_string(),
        client: request.client.clone(),
        offer_name: request.offer.clone(),
        email: request.email.clone(),
        start_date: request.start.format("%Y-%m-%d").to_string(),
        discount_percent: request.discount_percent,
        status: "open".into(),
        run_id: None,
    }
}

/// The review card of `draft` and its buttons' actions.
pub fn card(
    draft: &OfferDraft,
    settings: &Settings,
    today: NaiveDate,
) -> (Outbound, Vec<(ButtonToken, Action)>) {
    let cap = settings.policy.guard.max_discount;
    let Some(offer) = find_offer(&settings.offers, &draft.offer_name) else {
        return (
            Outbound::text(format!(
                "The offer '{}' is no longer in the settings.",
                draft.offer_name
            )),
            Vec::new(),
        );
    };
    let quote = Quote::new(offer, draft.discount_percent);
    let start = parse_date(&draft.start_date);
    let text = card_text(draft, &quote, cap, start);
    let change = |change: OfferChange| Action::OfferTerms {
        offer_id: draft.id.clone(),
        change,
    };
    let mut choices = Vec::new();
    for percent in DISCOUNT_CHOICES
        .into_iter()
        .filter(|p| *p <= cap && *p != draft.discount_percent)
    {
        choices.push((
            format!("Discount −{percent}%"),
            change(OfferChange::Discount { percent }),
        ));
    }
    if draft.discount_percent > 0 {
        choices.push((
            "No discount".into(),
            change(OfferChange::Discount { percent: 0 }),
        ));
    }
    if let Some(start) = start {
        let earlier = start - Duration::days(7);
        let others = [
            earlier,
            start + Duration::days(7),
            start + Duration::days(14),
        ];
        for date in others.into_iter().filter(|d| *d >= today) {
            choices.push((
                format!("Start {}", date.format("%-d %b")),
                change(OfferChange::Start {
                    date: date.format("%Y-%m-%d").to_string(),
                }),
            ));
        }
    }
    choices.push(("Confirm".into(), change(OfferChange::Confirm)));
    choices.push(("Cancel".into(), change(OfferChange::Cancel)));
    let (buttons, actions) = action_buttons(choices);
    (Outbound::text(text).with_buttons(buttons), actions)
}

fn card_text(draft: &OfferDraft, quote: &Quote, cap: u32, start: Option<NaiveDate>) -> String {
    let duration = quote
        .duration
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let discount = if quote.discount_percent == 0 {
        format!("none (up to {cap}% allowed)")
    } else {
        format!(
            "{}%, {} off (up to {cap}% allowed)",
            quote.discount_percent,
            eur(quote.discount_eur)
        )
    };
    let start = start
        .map(|d| d.format("%A %-d %B %Y").to_string())
        .unwrap_or_else(|| draft.start_date.clone());
    let email = match &draft.email {
        Some(email) => format!("E-mail to: {email}, after you approve the proposal"),
        None => "E-mail to: nobody (add email=… to /offer to send it)".into(),
    };
    format!(
        "Offer for {client}: {offer}{duration}\n\
         Price: {price}\n\
         Discount: {discount}\n\
         Terms: {terms}\n\
         Start: {start}\n\
         {email}\n\n\
         Nothing is written or sent until you press Confirm.",
        client = draft.client,
        offer = quote.offer,
        price = quote.price_line(),
        terms = quote.terms_line(),
    )
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// What a press on a review button came to.
#[derive(Debug)]
pub enum Pressed {
    /// A sentence, or a new card with its buttons.
    Reply(Outbound, Vec<(ButtonToken, Action)>),
    /// Confirmed: start the flow with this request, then call [`confirmed_in`].
    Confirm(OfferDraft),
}

fn say(text: impl Into<String>) -> Pressed {
    Pressed::Reply(Outbound::text(text), Vec::new())
}

/// Applies a press inside the caller's transaction (which also takes the
/// button).
pub async fn press_in(
    tx: &mut Tx,
    settings: &Settings,
    offer_id: &str,
    change: OfferChange,
    today: NaiveDate,
) -> StoreResult<Pressed> {
    let Some(mut draft) = tx.offer_draft(offer_id).await? else {
        return Ok(say(
            "That offer is no longer there; start again with /offer.",
        ));
    };
    if draft.status != "open" {
        let run = draft
            .run_id
            .map(|r| format!(" (run {})", r.short()))
            .unwrap_or_default();
        return Ok(say(format!(
            "This offer for {} is already {}{run}; its buttons no longer change it.",
            draft.client, draft.status
        )));
    }
    match change {
        OfferChange::Discount { percent } => {
            // A button made under a higher cap, or a forged one, is refused
            // like a typed discount.
            if let Err(refused) = check_discount(percent, settings.policy.guard.max_discount) {
                return Ok(say(refused.to_string()));
            }
            draft.discount_percent = percent;
        }
        OfferChange::Start { date } => match parse_date(&date) {
            Some(day) if day >= today => draft.start_date = date,
            Some(day) => return Ok(say(OfferError::StartInPast(day).to_string())),
            None => return Ok(say(OfferError::BadStart(date).to_string())),
        },
        OfferChange::Confirm => return Ok(Pressed::Confirm(draft)),
        OfferChange::Cancel => {
            draft.status = "cancelled".into();
            tx.update_offer_draft(&draft).await?;
            return Ok(say(format!(
                "The offer for {} is cancelled; nothing was made.",
                draft.client
            )));
        }
    }
    tx.update_offer_draft(&draft).await?;
    let (message, actions) = card(&draft, settings, today);
    Ok(Pressed::Reply(message, actions))
}

/// The run's request: what the model reads about the offer (the terms
/// themselves reach the flow through its `quote` step).
pub fn run_request(draft: &OfferDraft) -> String {
    format!(
        "A proposal for {}: {}, starting {}",
        draft.client, draft.offer_name, draft.start_date
    )
}

/// Marks the offer confirmed with the run that makes its proposal.
pub async fn confirmed_in(tx: &mut Tx, mut draft: OfferDraft, run: RunId) -> StoreResult<String> {
    draft.status = "confirmed".into();
    draft.run_id = Some(run);
    tx.update_offer_draft(&draft).await?;
    Ok(format!(
        "Confirmed. Writing the {} proposal for {} (run {}); it comes back to you for approval with the PDF.",
        draft.offer_name,
        draft.client,
        run.short()
    ))
}
