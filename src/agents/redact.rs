//! POLICY HOOK: the way into a model call. Personal data leaves the process
//! as placeholders (`[EMAIL_1]`) and is put back in the answer the operator
//! sees; the batch path redacts its request the same way
//! ([`Agents::queue_for_batch`]) and restores the answer with
//! [`Agents::restore_redacted`]. The rules live in `crate::policy`.

use super::{Agents, Completion, ModelCall, ModelError};

impl Agents {
    /// Calls a model of the call's tier (capped by its label), falling back
    /// down the chain and, when the label allows, to cheaper tiers when the
    /// budget is short; personal data is replaced before the call and put
    /// back in its answer.
    #[tracing::instrument(skip_all, fields(run = ?call.run_id, step = ?call.step, tier = %call.tier))]
    pub async fn complete(&self, call: &ModelCall) -> Result<Completion, ModelError> {
        let (redacted, redaction) = self.redacted(call);
        if redaction.count() > 0 {
            let detail = format!(
                "{} personal-data items replaced by placeholders before the model call",
                redaction.count()
            );
            self.inner
                .store
                .record_guardrail(call.run_id, "redacted", &detail)
                .await
                .map_err(ModelError::Ledger)?;
        }
        let mut completion = self.complete_redacted(&redacted).await?;
        completion.text = redaction.restore(&completion.text);
        Ok(completion)
    }

    /// The call with personal data replaced, and the placeholders used.
    pub(super) fn redacted(&self, call: &ModelCall) -> (ModelCall, crate::policy::Redaction<'_>) {
        let mut redaction = self.inner.redactor.redaction();
        let redacted = ModelCall {
            system: redaction.redact(&call.system),
            prompt: redaction.redact(&call.prompt),
            redacted_items: redaction.count(),
            ..call.clone()
        };
        (redacted, redaction)
    }

    /// POLICY: `text` with the placeholders that redacting `system` and
    /// `prompt` hands out put back (for batch answers, which come back
    /// after the call's own placeholders are gone).
    pub fn restore_redacted(&self, system: &str, prompt: &str, text: &str) -> String {
        let mut redaction = self.inner.redactor.redaction();
        let _ = redaction.redact(system);
        let _ = redaction.redact(prompt);
        redaction.restore(text)
    }
}
