//! The memory commands' handlers: `/remember`, `/memory`, `/forget`,
//! `/sources`, `/forget_person`. Their entries are in the command table
//! (`commands.rs`); the work is in [`crate::memory::commands`].

use super::{Controller, ControllerError, Handled};
use crate::domain::Inbound;
use crate::memory::{Memory, commands};

impl Controller {
    /// Memory over this controller's store, with the `[memory]` settings.
    fn memory(&self) -> Memory {
        Memory::from_settings(self.store.clone(), &self.settings)
    }

    pub(super) async fn remember(
        &self,
        inbound: &Inbound,
        text: &str,
    ) -> Result<Handled, ControllerError> {
        let result = commands::remember(&self.memory(), text, &inbound.user_name).await;
        Ok(Handled::reply(commands::reply(result)))
    }

    pub(super) async fn search_memory(
        &self,
        _inbound: &Inbound,
        query: &str,
    ) -> Result<Handled, ControllerError> {
        let result = commands::search(&self.memory(), query).await;
        Ok(Handled::reply(commands::reply(result)))
    }

    pub(super) async fn forget(
        &self,
        _inbound: &Inbound,
        name: &str,
    ) -> Result<Handled, ControllerError> {
        let result = commands::forget(&self.memory(), name).await;
        Ok(Handled::reply(commands::reply(result)))
    }

    pub(super) async fn list_sources(
        &self,
        _inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        let result = commands::sources(&self.memory()).await;
        Ok(Handled::reply(commands::reply(result)))
    }

    pub(super) async fn forget_person(
        &self,
        inbound: &Inbound,
        who: &str,
    ) -> Result<Handled, ControllerError> {
        let result = commands::forget_person(&self.memory(), who, inbound).await;
        Ok(Handled::reply(commands::reply(result)))
    }
}
