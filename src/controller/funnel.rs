//! The handlers of `/retract` and `/result`, and the funnel's buttons
//! (when to publish, Retract). The work is in [`crate::funnel`].

use super::{Controller, ControllerError, Handled};
use crate::domain::{ButtonToken, Inbound, RunId};
use crate::store::ActionLookup;

impl Controller {
    pub(super) async fn post(
        &self,
        inbound: &Inbound,
        request: &str,
    ) -> Result<Handled, ControllerError> {
        if request.is_empty() {
            return Ok(Handled::reply(
                "Tell me what to post, e.g. /post a LinkedIn post about the Trilho Hostels audit",
            ));
        }
        self.start_flow(inbound, "post", request.to_string()).await
    }

    pub(super) async fn retract(
        &self,
        inbound: &Inbound,
        id: &str,
    ) -> Result<Handled, ControllerError> {
        let run = match self.find_run(id).await? {
            Ok(run) => run,
            Err(message) => return Ok(Handled::reply(message)),
        };
        let reply =
            crate::funnel::retract(&self.engine, &self.flows, run.id, &inbound.user_name).await?;
        Ok(Handled::reply(reply))
    }

    pub(super) async fn result(
        &self,
        _inbound: &Inbound,
        args: &str,
    ) -> Result<Handled, ControllerError> {
        let (id, numbers) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        let run = match self.find_run(id).await? {
            Ok(run) => run,
            Err(message) => return Ok(Handled::reply(message)),
        };
        Ok(Handled::reply(
            crate::funnel::record_results(&self.store, run.id, numbers).await?,
        ))
    }

    /// The Retract button: taken once, then the compensations run (they
    /// call the platforms, so not inside the token's transaction; a crash
    /// in between leaves `/retract RUN` to finish the job).
    pub(super) async fn retract_pressed(
        &self,
        inbound: &Inbound,
        token: &ButtonToken,
        run_id: RunId,
    ) -> Result<Handled, ControllerError> {
        let mut tx = self.store.begin().await?;
        if !matches!(tx.use_action(token).await?, ActionLookup::Taken(_)) {
            tx.rollback().await?;
            return Ok(Handled::private(inbound, "That button was already used."));
        }
        tx.finish_inbound(inbound, &[]).await?;
        tx.commit().await?;
        let reply =
            crate::funnel::retract(&self.engine, &self.flows, run_id, &inbound.user_name).await?;
        let mut tx = self.store.begin().await?;
        tx.enqueue(
            &inbound.chat,
            Some(run_id),
            &crate::domain::Outbound::text(reply),
        )
        .await?;
        tx.commit().await?;
        Ok(Handled::replies(Vec::new()).finished())
    }
}
