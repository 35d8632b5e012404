//! Button presses: an action button (retry, cancel, raise the cap, a
//! routing choice, pause or resume a schedule) or an approval decision.
//! Each press is taken in one transaction with what it does and with
//! marking its update handled, so a crash anywhere leaves either nothing done (the redelivered press
//! works) or everything (the redelivery is a duplicate).

use super::{Controller, ControllerError, Handled, NOT_OPEN, Outcome, actor};
use crate::domain::{Action, ButtonToken, Inbound};
use crate::engine::DecideError;
use crate::scheduler::commands as scheduler;
use crate::store::ActionLookup;

const ALREADY_USED: &str = "That button was already used.";

impl Controller {
    pub(super) async fn press(
        &self,
        inbound: &Inbound,
        token: &ButtonToken,
    ) -> Result<Handled, ControllerError> {
        match self.store.peek_action(token).await? {
            ActionLookup::Taken(action) => self.act(inbound, token, action).await,
            ActionLookup::Used => Ok(Handled::private(inbound, ALREADY_USED)),
            ActionLookup::Unknown => self.decide(inbound, token).await,
        }
    }

    async fn decide(
        &self,
        inbound: &Inbound,
        token: &ButtonToken,
    ) -> Result<Handled, ControllerError> {
        let mut tx = self.store.begin().await?;
        match self.engine.decide_in(&mut tx, token, actor(inbound)).await {
            Ok(decided) => {
                tx.finish_inbound(inbound, &[]).await?;
                tx.commit().await?;
                Ok(Handled::drive(decided.run_id)
                    .with_outcome(Outcome::Decided(decided.decision))
                    .finished())
            }
            Err(DecideError::NotOpen) => {
                tx.rollback().await?;
                Ok(Handled::private(inbound, NOT_OPEN).with_outcome(Outcome::NotOpen))
            }
            Err(DecideError::Store(error)) => Err(error.into()),
        }
    }

    /// Takes the action and does it in one transaction.
    async fn act(
        &self,
        inbound: &Inbound,
        token: &ButtonToken,
        action: Action,
    ) -> Result<Handled, ControllerError> {
        // FUNNEL: a retraction calls the platforms, outside the transaction.
        if let Action::Retract { run_id } = action {
            return self.retract_pressed(inbound, token, run_id).await;
        }
        // AUTONOMY: only the owner answers a graduation proposal (the
        // token stays unused for them).
        if matches!(action, Action::AnswerGraduation { .. }) && !self.may_change_autonomy(inbound) {
            return Ok(Handled::private(
                inbound,
                crate::autonomy::command::OWNER_ONLY,
            ));
        }
        // A routing choice that names a command is a report: read it
        // before the transaction (on SQLite the store has one connection,
        // which the open transaction holds).
        let report = match &action {
            Action::Route { intent, request } if !self.routable_flow(intent) => {
                Some(self.perform_command(inbound, intent, request).await?)
            }
            _ => None,
        };
        // A pause / resume stamps the schedule with the database's clock:
        // read it before the transaction, for the same reason.
        let schedule_now = match &action {
            Action::SetSchedulePaused { .. } => Some(self.store.database_now_ms().await?),
            _ => None,
        };
        let mut tx = self.store.begin().await?;
        if !matches!(tx.use_action(token).await?, ActionLookup::Taken(_)) {
            tx.rollback().await?;
            return Ok(Handled::private(inbound, ALREADY_USED));
        }
        let by = &inbound.user_name;
        let handled = match action {
            Action::RaiseDailyCap { day, amount_usd } => {
                Handled::reply(if tx.raise_daily_cap(&day, amount_usd).await? {
                    format!(
                        "Today's cap is raised by ${amount_usd:.2}, for today only. Press Retry on the stopped run to continue."
                    )
                } else {
                    "Today's cap was already raised once; it can be raised once a day.".to_string()
                })
            }
            Action::RetryRun { run_id, tier } => {
                if self.engine.retry_in(&mut tx, run_id, by, tier).await? {
                    Handled::drive(run_id)
                } else {
                    Handled::reply(format!(
                        "Run {} is no longer waiting for a retry.",
                        run_id.short()
                    ))
                }
            }
            Action::CancelRun { run_id } => {
                Handled::reply(if self.engine.cancel_in(&mut tx, run_id, by).await? {
                    format!("Run {} is cancelled.", run_id.short())
                } else {
                    format!(
                        "Run {} is no longer waiting; nothing to cancel.",
                        run_id.short()
                    )
                })
            }
            Action::Route { intent, request } => match report {
                Some(report) => report,
                None => match self.refuse_without_model(&intent) {
                    Some(refusal) => refusal,
                    None => {
                        let start = self.start_request(inbound, &intent, request);
                        Handled::drive(self.engine.start_in(&mut tx, start).await?)
                    }
                },
            },
            Action::OfferTerms { offer_id, change } => {
                self.offer_press(&mut tx, inbound, &offer_id, change)
                    .await?
            }
            Action::SetSchedulePaused { name, paused } => {
                let now_ms = schedule_now.unwrap_or_default();
                Handled::reply(scheduler::set_paused_in(&mut tx, &name, paused, now_ms).await?)
            }
            Action::PublishWhen { run_id, when } => {
                if crate::funnel::deliver_publish_time_in(&mut tx, run_id, &when, by).await? {
                    Handled::drive(run_id)
                } else {
                    Handled::reply(format!(
                        "Run {} is no longer waiting for a publishing time.",
                        run_id.short()
                    ))
                }
            }
            Action::AnswerGraduation {
                flow,
                from,
                to,
                raise,
                proposed_at,
            } => {
                let proposal = crate::autonomy::Proposed {
                    flow: &flow,
                    from,
                    to,
                    at: proposed_at,
                };
                let settings = &self.settings;
                Handled::reply(
                    crate::autonomy::answer_in(&mut tx, settings, proposal, raise, by).await?,
                )
            }
            // Taken above, before the transaction.
            Action::Retract { .. } => Handled::reply(""),
        };
        tx.finish_inbound(inbound, &handled.replies).await?;
        tx.commit().await?;
        Ok(handled.finished())
    }
}
