//! The handlers of `/digest`, `/schedules` and `/schedule` (issue 12). The
//! work is in [`crate::scheduler::commands`]; these adapt it to the
//! command table. The pause / resume buttons are taken in `buttons.rs`.

use super::{Controller, ControllerError, Handled};
use crate::domain::Inbound;
use crate::scheduler::commands as scheduler;

impl Controller {
    pub(super) async fn digest(
        &self,
        _inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        Ok(Handled::replies(
            scheduler::digest_now(&self.store, &self.settings, &self.agents).await?,
        ))
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
