//! `/lead TEXT` (a lead pasted or forwarded in chat) and `/leads`. Their
//! entries are in the command table; the work is in [`crate::leads`].

use super::{Controller, ControllerError, Handled};
use crate::domain::Inbound;
use crate::leads::{LeadError, Leads, from_text, store_lead};

impl Controller {
    pub(super) async fn new_lead(
        &self,
        _inbound: &Inbound,
        text: &str,
    ) -> Result<Handled, ControllerError> {
        let lead = match from_text(text) {
            Ok(lead) => lead,
            Err(LeadError::NoMessage) => {
                return Ok(Handled::reply(
                    "Paste the lead's message after /lead, e.g. /lead Hi, we need a new logo by March…",
                ));
            }
            Err(error) => return Ok(Handled::reply(error.to_string())),
        };
        match store_lead(&self.store, &lead).await {
            Ok(true) => Ok(Handled::reply(
                "Lead stored. I'll qualify it and come back with a reply draft or a question.",
            )),
            Ok(false) => Ok(Handled::reply("That lead is stored already.")),
            Err(error) => {
                tracing::error!(error = ?error, "storing a lead from chat failed");
                Ok(Handled::reply(
                    "I could not store the lead (the database did not answer). Nothing was lost on your side: send it again in a moment.",
                ))
            }
        }
    }

    pub(super) async fn list_leads(
        &self,
        _inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        let leads = match Leads(&self.store).recent(20).await {
            Ok(leads) => leads,
            Err(error) => {
                tracing::error!(error = ?error, "reading the leads failed");
                return Ok(Handled::reply(
                    "I could not read the leads; try again in a moment.",
                ));
            }
        };
        if leads.is_empty() {
            return Ok(Handled::reply(
                "No leads yet. They arrive by the web hook or /lead TEXT.",
            ));
        }
        let lines: Vec<String> = leads
            .iter()
            .map(|lead| {
                let who = [lead.name.as_str(), lead.company.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                let who = if who.is_empty() {
                    crate::domain::clip(&lead.message, 40)
                } else {
                    who
                };
                format!(
                    "#{} {} — {} ({})",
                    lead.id,
                    crate::policy::neutralize(&who),
                    lead.status,
                    lead.tier.as_deref().unwrap_or("not scored yet"),
                )
            })
            .collect();
        Ok(Handled::reply(format!(
            "Leads, newest first:\n{}",
            lines.join("\n")
        )))
    }
}
