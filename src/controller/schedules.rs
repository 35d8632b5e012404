//! The handlers of `/digest` (a run of the `digest` flow), `/schedules`
//! and `/schedule` (issue 12). The work is in [`crate::scheduler::commands`];
//! these adapt it to the command table. The pause / resume buttons are
//! taken in `buttons.rs`.

use super::{Controller, ControllerError, Handled};
use crate::domain::Inbound;
use crate::scheduler::commands as scheduler;

impl Controller {
    /// `/digest`: a run of the digest flow, answered in this chat.
    pub(super) async fn digest(
        &self,
        inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        // An empty request: the digest reports on now (a schedule's run
        // carries its tick instead).
        let start = self.start_request(inbound, "digest", String::new());
        let run = self.engine.start(start).await?;
        Ok(Handled::drive(run))
    }

    pub(super) async fn list_schedules(
        &self,
        _inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        Ok(Handled::replies(scheduler::list(&self.store).await?))
    }

    pub(super) async fn change_schedule(
        &self,
        _inbound: &Inbound,
        args: &str,
    ) -> Result<Handled, ControllerError> {
        Ok(Handled::reply(scheduler::change(&self.store, args).await?))
    }
}
