//! The `quote` and `proposal` step kinds, and what an approval of a
//! proposal takes from them (the PDF, the price flags). The engine calls
//! these and journals their outputs (`engine/steps.rs`).
//!
//! The one write they make is outside the step's transaction, idempotent
//! by design like `retrieve`'s: the PDF is stored as a blob named by its
//! SHA-256, so a step repeated after a lapsed claim stores nothing new.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Quote, eur, find_offer, price_flags};
use crate::config::Settings;
use crate::domain::{Attachment, AttachmentBody, RunId};
use crate::email::{Attachment as EmailAttachment, EmailError, EmailMessage};
use crate::flows::{PromptError, Prompts};
use crate::policy::{Flag, FlagKind, Review};
use crate::store::{Store, StoreError};

pub const PDF: &str = "application/pdf";

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("this run has no confirmed offer (start it with /offer)")]
    NoOffer,
    #[error("the offer '{0}' is no longer in the settings")]
    OfferGone(String),
    #[error("step '{0}' has no output to use")]
    Missing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] PromptError),
    #[error(transparent)]
    Pdf(#[from] super::pdf::PdfError),
    #[error("the e-mail could not be queued: {0}")]
    Email(#[from] EmailError),
}

impl StepError {
    /// What the operator can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            StepError::NoOffer => "Use /offer CLIENT, OFFER to make a proposal.",
            StepError::OfferGone(_) => "Put the offer back in [[offers]], or make a new /offer.",
            StepError::Missing(_) => "Check the flow file's step names.",
            StepError::Store(_) => "Check the database (soloist doctor).",
            StepError::Template(_) => "Fix the template file.",
            StepError::Pdf(_) => "This is a bug; please report it.",
            StepError::Email(_) => "Check the client's address and the database, then retry.",
        }
    }
}

/// The `quote` step: the run's confirmed offer, priced from the settings.
pub async fn quote(store: &Store, settings: &Settings, run_id: RunId) -> Result<Value, StepError> {
    let draft = store
        .offer_draft_for_run(run_id)
        .await?
        .ok_or(StepError::NoOffer)?;
    let offer = find_offer(&settings.offers, &draft.offer_name)
        .ok_or_else(|| StepError::OfferGone(draft.offer_name.clone()))?;
    let quote = Quote::new(offer, draft.discount_percent);
    Ok(json!({
        "client": draft.client,
        "email": draft.email,
        "start_date": draft.start_date,
        "offer_id": draft.id,
        "quote": quote,
    }))
}

/// Which earlier steps a proposal is made of.
pub struct ProposalParts<'a> {
    pub template: &'a str,
    pub quote_from: &'a str,
    pub scope_from: &'a str,
    pub cover_from: &'a str,
}

/// The `proposal` step: the document as Markdown (the draft the operator
/// approves) and as a stored PDF, with a flag for every amount the model's
/// texts state that the quote does not.
pub async fn proposal(
    store: &Store,
    settings: &Settings,
    prompts: &Prompts,
    outputs: &BTreeMap<String, Value>,
    parts: ProposalParts<'_>,
) -> Result<Value, StepError> {
    let terms = outputs
        .get(parts.quote_from)
        .ok_or_else(|| StepError::Missing(parts.quote_from.into()))?;
    let quote: Quote = serde_json::from_value(terms["quote"].clone())
        .map_err(|_| StepError::Missing(parts.quote_from.into()))?;
    let text_of = |step: &str| {
        outputs
            .get(step)
            .and_then(|o| o.get("text"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| StepError::Missing(step.into()))
    };
    let scope = text_of(parts.scope_from)?;
    let cover = text_of(parts.cover_from)?;
    let mut flags = price_flags(&quote, "scope", &scope);
    flags.extend(price_flags(&quote, "cover note", &cover));
    let client = terms["client"].as_str().unwrap_or_default().to_string();
    let values = json!({
        "business": settings.business,
        "client": client,
        "start_date": terms["start_date"],
        "date": super::review::business_today(settings).format("%-d %B %Y").to_string(),
        "quote": quote,
        "price_line": quote.price_line(),
        "terms_line": quote.terms_line(),
        "deposit": eur(quote.deposit_eur),
        "balance": eur(quote.balance_eur),
        "per_month": quote.per_month_eur.map(eur),
        "scope": scope,
        "cover": cover,
    });
    let markdown = prompts.render(parts.template, &values)?.trim().to_string();
    let title = format!("Proposal: {} for {client}", quote.offer);
    let pdf = super::pdf::render(&title, &markdown)?;
    let blob = store.put_blob(PDF, &pdf).await?;
    Ok(json!({
        "text": markdown,
        "client": client,
        "email": terms["email"],
        "quote": quote,
        "price_flags": flags,
        "file": {
            "file_name": file_name(&client, &quote.offer),
            "content_type": PDF,
            "blob": blob,
            "bytes": pdf.len(),
        },
    }))
}

/// Which earlier steps an e-mailed proposal comes from.
pub struct SendParts<'a> {
    pub proposal_from: &'a str,
    pub approved_from: &'a str,
}

/// The `send_proposal` step: the approved proposal to the client by
/// e-mail (its text, and the PDF attached), queued once per run (the key
/// is the run's id, so a step repeated after a lapsed claim queues
/// nothing new). Returns the output and what the operator is told.
pub async fn send(
    store: &Store,
    settings: &Settings,
    run_id: RunId,
    outputs: &BTreeMap<String, Value>,
    parts: SendParts<'_>,
) -> Result<(Value, String), StepError> {
    let proposal = outputs
        .get(parts.proposal_from)
        .ok_or_else(|| StepError::Missing(parts.proposal_from.into()))?;
    let approved = outputs
        .get(parts.approved_from)
        .ok_or_else(|| StepError::Missing(parts.approved_from.into()))?;
    if approved.get("decision").and_then(Value::as_str) != Some("approved") {
        return Ok((
            json!({ "sent": false }),
            "The proposal was not approved, so nothing was sent.".into(),
        ));
    }
    let client = proposal["client"].as_str().unwrap_or_default();
    let Some(to) = proposal["email"].as_str().filter(|e| !e.is_empty()) else {
        let said = format!(
            "Nothing was e-mailed: there is no address for {client} (add email=… to /offer next time). The PDF is on the approval above."
        );
        return Ok((json!({ "sent": false, "reason": "no address" }), said));
    };
    let text = approved["text"].as_str().unwrap_or_default().to_string();
    let quote: Quote = serde_json::from_value(proposal["quote"].clone())
        .map_err(|_| StepError::Missing(parts.proposal_from.into()))?;
    let pdf = approved_pdf(store, proposal, &text, &quote, client).await?;
    let file_name = file_name(client, &quote.offer);
    let message = EmailMessage {
        to: to.to_string(),
        subject: format!("Proposal: {} for {client}", quote.offer),
        text: text.clone(),
        attachments: vec![EmailAttachment {
            filename: file_name.clone(),
            content_type: PDF.into(),
            bytes: pdf,
        }],
    };
    let key = format!("proposal:{run_id}");
    let queued = crate::email::queue(store, message, &key).await?;
    let when = if settings.email.is_configured() {
        "it goes out now"
    } else {
        "it waits until [email] is configured"
    };
    let said = format!("E-mailed to {to} with {file_name} attached ({when}).");
    Ok((
        json!({ "sent": true, "to": to, "file_name": file_name, "queued_now": queued }),
        said,
    ))
}

/// The PDF of the approved text: the stored one when the operator approved
/// the proposal as made, a new one when they edited it first.
async fn approved_pdf(
    store: &Store,
    proposal: &Value,
    approved_text: &str,
    quote: &Quote,
    client: &str,
) -> Result<Vec<u8>, StepError> {
    let unchanged = proposal.get("text").and_then(Value::as_str) == Some(approved_text);
    let stored = proposal
        .get("file")
        .and_then(|f| f.get("blob"))
        .and_then(Value::as_str);
    if let (true, Some(blob)) = (unchanged, stored)
        && let Some(bytes) = store.blob(blob).await?
    {
        return Ok(bytes);
    }
    let title = format!("Proposal: {} for {client}", quote.offer);
    Ok(super::pdf::render(&title, approved_text)?)
}

/// "proposal-forno-velho-brand-sprint.pdf".
fn file_name(client: &str, offer: &str) -> String {
    let slug: String = format!("{client} {offer}")
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let slug: Vec<&str> = slug.split('-').filter(|s| !s.is_empty()).collect();
    format!("proposal-{}.pdf", slug.join("-"))
}

/// The PDF a draft step made, when the draft offered is still its text
/// (after an Edit the operator's new text has no PDF of its own yet).
pub fn attachment_for(output: Option<&Value>, draft: &str) -> Option<Attachment> {
    let output = output?;
    if output.get("text").and_then(Value::as_str) != Some(draft) {
        return None;
    }
    let file = output.get("file")?;
    Some(Attachment {
        file_name: file.get("file_name")?.as_str()?.to_string(),
        content_type: file.get("content_type")?.as_str()?.to_string(),
        body: AttachmentBody::Blob(file.get("blob")?.as_str()?.to_string()),
    })
}

/// POLICY HOOK: for a proposal, the amounts must be the quote's, which is
/// stricter than the general price check (any amount some offer explains):
/// its price flags replace the general ones. Other flags stay.
pub fn own_price_flags(review: &mut Review, output: Option<&Value>, draft: &str) {
    let Some(output) = output else {
        return;
    };
    let Some(flags) = output.get("price_flags").and_then(Value::as_array) else {
        return;
    };
    if output.get("text").and_then(Value::as_str) != Some(draft) {
        return;
    }
    review.flags.retain(|f| f.kind != FlagKind::Price);
    review
        .flags
        .extend(flags.iter().filter_map(Value::as_str).map(|detail| Flag {
            kind: FlagKind::Price,
            detail: detail.to_string(),
        }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_is_a_plain_slug() {
        assert_eq!(
            file_name("Forno Velho, Lda.", "Brand Sprint"),
            "proposal-forno-velho-lda-brand-sprint.pdf"
        );
    }
}
