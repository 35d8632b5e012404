//! `/autonomy` and `/autonomy FLOW LEVEL` (issue 13, graduated automation).
//! The work is in [`crate::autonomy::command`]; the graduation buttons are
//! taken in `buttons.rs`.

use super::{Controller, ControllerError, Handled};
use crate::autonomy::command;
use crate::domain::Inbound;

impl Controller {
    pub(super) async fn autonomy(
        &self,
        inbound: &Inbound,
        args: &str,
    ) -> Result<Handled, ControllerError> {
        if args.is_empty() {
            let text = command::list(&self.store, &self.settings, &self.flows).await?;
            return Ok(Handled::reply(text));
        }
        if !self.may_change_autonomy(inbound) {
            return Ok(Handled::private(inbound, command::OWNER_ONLY));
        }
        let asked = match command::parse(args, &self.flows) {
            Ok(asked) => asked,
            Err(sentence) => return Ok(Handled::reply(sentence)),
        };
        // The change and the command's handling commit together: a
        // redelivered command is a duplicate, not a second audit row.
        let mut tx = self.store.begin().await?;
        let by = &inbound.user_name;
        let reply = command::set_in(&mut tx, &self.settings, asked, by).await?;
        let handled = Handled::reply(reply);
        tx.finish_inbound(inbound, &handled.replies).await?;
        tx.commit().await?;
        Ok(handled.finished())
    }

    /// The owner changes autonomy levels; the listed users only approve.
    pub(super) fn may_change_autonomy(&self, inbound: &Inbound) -> bool {
        crate::autonomy::is_owner(&self.settings, inbound)
    }
}
