//! The handlers of `/offer` and its review buttons (issue 13, productized
//! offers). The work is in [`crate::offers::review`]; these adapt it to the
//! command table and to a press's transaction.

use super::{Controller, ControllerError, Handled, policy_hooks};
use crate::domain::{Inbound, OfferChange};
use crate::engine::StartRun;
use crate::offers::{self, review};
use crate::store::Tx;

/// The flow that makes a confirmed offer's proposal.
const FLOW: &str = "offer";

impl Controller {
    /// `/offer CLIENT, OFFER[, start …][, email=…][, discount=…]`: the
    /// review card, or a sentence saying what is wrong (unknown offer,
    /// discount above the cap, …). Nothing is stored for a refused request.
    pub(super) async fn offer(
        &self,
        inbound: &Inbound,
        args: &str,
    ) -> Result<Handled, ControllerError> {
        let settings = &self.settings;
        let today = review::business_today(settings);
        let cap = settings.policy.guard.max_discount;
        let mut request = match offers::parse_request(args, &settings.offers, cap, today) {
            Ok(request) => request,
            Err(refused) => return Ok(Handled::reply(refused.to_string())),
        };
        if let Some(reply) = self.refuse_without_model(FLOW) {
            return Ok(reply);
        }
        // POLICY HOOK: a burst beyond the limits gets one sentence.
        if let Some(limited) = policy_hooks::limited(&self.engine, inbound, Some(FLOW)).await? {
            return Ok(limited);
        }
        // No address given: a lead of that name or company has one.
        if request.email.is_none() {
            request.email = self.store.lead_email(&request.client).await?;
        }
        let draft = review::new_draft(&request, &inbound.chat, &inbound.user_name);
        self.store.create_offer_draft(&draft).await?;
        let (card, actions) = review::card(&draft, settings, today);
        self.store.create_actions(&actions).await?;
        Ok(Handled::replies(vec![card]))
    }

    /// A review button, inside the press's transaction: a new card, a
    /// refusal, or (Confirm) the run that makes the proposal.
    pub(super) async fn offer_press(
        &self,
        tx: &mut Tx,
        inbound: &Inbound,
        offer_id: &str,
        change: OfferChange,
    ) -> Result<Handled, ControllerError> {
        let settings = &self.settings;
        let today = review::business_today(settings);
        match review::press_in(tx, settings, offer_id, change, today).await? {
            review::Pressed::Reply(message, actions) => {
                tx.insert_actions(&actions).await?;
                Ok(Handled::replies(vec![message]))
            }
            review::Pressed::Confirm(draft) => {
                if let Some(reply) = self.refuse_without_model(FLOW) {
                    return Ok(reply);
                }
                let start = StartRun {
                    flow: FLOW.into(),
                    chat: inbound.chat.clone(),
                    request: review::run_request(&draft),
                    requested_by: inbound.user_name.clone(),
                    idempotency_key: format!("offer:{}", draft.id),
                };
                let run = self.engine.start_in(tx, start).await?;
                let text = review::confirmed_in(tx, draft, run).await?;
                let mut handled = Handled::drive(run);
                handled.replies.push(crate::domain::Outbound::text(text));
                Ok(handled)
            }
        }
    }
}
