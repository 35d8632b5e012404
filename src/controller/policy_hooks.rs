//! POLICY HOOKS in the controller: rate limits before work starts, the
//! guardrail lines of `/run ID`, and the `/policy` command's handler. The
//! rules live in `crate::policy`.

use std::fmt::Write;

use super::{Controller, ControllerError, Handled};
use crate::domain::{Inbound, RunId};
use crate::engine::Engine;
use crate::policy::{LIMITED, Limited};
use crate::store::StoreError;

/// One sentence when `inbound`'s sender (and `flow`, when given) is over
/// its limit; the refusal is audited.
pub(super) async fn limited(
    engine: &Engine,
    inbound: &Inbound,
    flow: Option<&str>,
) -> Result<Option<Handled>, StoreError> {
    let user = format!("{}:{}", inbound.chat.platform, inbound.user_id);
    refuse(engine, engine.guard().limit(Some(&user), flow)).await
}

/// The same for a flow's own limit only.
pub(super) async fn limited_flow(
    engine: &Engine,
    flow: &str,
) -> Result<Option<Handled>, StoreError> {
    refuse(engine, engine.guard().limit(None, Some(flow))).await
}

async fn refuse(
    engine: &Engine,
    outcome: Result<(), Limited>,
) -> Result<Option<Handled>, StoreError> {
    let Err(limited) = outcome else {
        return Ok(None);
    };
    let detail = match limited {
        Limited::User(user) => format!("{user} is over the per-person rate limit"),
        Limited::Flow(flow) => format!("flow '{flow}' is over its rate limit"),
    };
    engine
        .store()
        .record_guardrail(None, "limited", &detail)
        .await?;
    Ok(Some(Handled::reply(LIMITED)))
}

/// "Guardrails: …" lines for `/run ID`, empty when none fired.
pub(super) async fn run_lines(engine: &Engine, run: RunId) -> Result<String, StoreError> {
    let events = engine.store().guardrails_for_run(run).await?;
    let mut text = String::new();
    if events.is_empty() {
        return Ok(text);
    }
    text.push_str("\nGuardrails:");
    for event in events {
        let _ = write!(text, "\n- {}: {}", event.kind, event.detail);
    }
    Ok(text)
}

impl Controller {
    /// `/policy`: what the guardrails check, in a few lines.
    pub(super) async fn policy(
        &self,
        _inbound: &Inbound,
        _args: &str,
    ) -> Result<Handled, ControllerError> {
        Ok(Handled::reply(self.engine.guard().summary()))
    }
}
