//! What a step does to the world, from a closed set. `policy.approval_required_for`
//! names effects; a step with a required effect runs only after an approval
//! decision in its run's journal, whatever the flow file says.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::{Decision, JournalEvent};
use crate::flows::{Flow, StepDef, StepKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    ClientMessage,
    PublicPost,
    PriceQuote,
    Contract,
    Email,
    Refund,
}

impl Effect {
    pub const ALL: [Effect; 6] = [
        Effect::ClientMessage,
        Effect::PublicPost,
        Effect::PriceQuote,
        Effect::Contract,
        Effect::Email,
        Effect::Refund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::ClientMessage => "client communications",
            Effect::PublicPost => "public posts",
            Effect::PriceQuote => "pricing",
            Effect::Contract => "contracts",
            Effect::Email => "e-mail",
            Effect::Refund => "refunds",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown effect '{0}' (known: client communications, public posts, pricing, contracts, e-mail, refunds)"
)]
pub struct UnknownEffect(pub String);

impl FromStr for Effect {
    type Err = UnknownEffect;
    /// The names the default config uses, and their obvious singulars.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let key = name.trim().to_lowercase().replace(['_', '-'], " ");
        Ok(match key.as_str() {
            "client communications"
            | "client communication"
            | "client message"
            | "message to client"
            | "client messages" => Effect::ClientMessage,
            "public posts" | "public post" | "post" => Effect::PublicPost,
            "pricing" | "price quote" | "price quotes" | "quote" => Effect::PriceQuote,
            "contracts" | "contract" => Effect::Contract,
            "e mail" | "email" | "e mails" | "emails" => Effect::Email,
            "refunds" | "refund" => Effect::Refund,
            _ => return Err(UnknownEffect(name.to_string())),
        })
    }
}

/// Parses `policy.approval_required_for`; an unknown name is an error.
pub fn parse_required(names: &[String]) -> Result<BTreeSet<Effect>, UnknownEffect> {
    names.iter().map(|n| n.parse()).collect()
}

/// The effects a step declares: its flow file's `effects`, plus what its
/// kind does by itself (today's kinds produce drafts only; publishing and
/// sending kinds will declare theirs here).
pub fn step_effects(step: &StepDef) -> Result<BTreeSet<Effect>, UnknownEffect> {
    let mut effects = parse_required(&step.effects)?;
    effects.extend(kind_effects(&step.kind));
    Ok(effects)
}

fn kind_effects(kind: &StepKind) -> Vec<Effect> {
    match kind {
        StepKind::Context
        | StepKind::Retrieve { .. }
        | StepKind::Generate { .. }
        | StepKind::Approve { .. }
        | StepKind::FactCheck { .. }
        | StepKind::Extract { .. }
        | StepKind::Enrich { .. }
        | StepKind::Score { .. }
        | StepKind::LeadStatus { .. }
        | StepKind::Quote
        | StepKind::Proposal { .. } => Vec::new(),
        // The digest goes to the owner only: nothing public, no client.
        StepKind::DigestNumbers
        | StepKind::DigestRender { .. }
        | StepKind::DigestSummary { .. }
        | StepKind::DigestDeliver { .. } => Vec::new(),
        // Writes to a client by e-mail: needs an approval decision first.
        StepKind::Email { .. } => vec![Effect::Email, Effect::ClientMessage],
        StepKind::Publish { .. } => vec![Effect::PublicPost],
        // Declared in the flow file too; a send to a client is one always.
        StepKind::SendProposal { .. } => {
            vec![Effect::ClientMessage, Effect::PriceQuote, Effect::Email]
        }
    }
}

/// A flow whose step has a required effect with no approve step before it
/// is refused at start; the message names the step and effect.
pub fn check_flow(flow: &Flow, required: &BTreeSet<Effect>) -> Result<(), String> {
    for (index, step) in flow.steps.iter().enumerate() {
        let effects = step_effects(step).map_err(|e| format!("step '{}': {e}", step.name))?;
        let Some(effect) = effects.intersection(required).next() else {
            continue;
        };
        let approved_before = flow.steps[..index]
            .iter()
            .any(|s| matches!(s.kind, StepKind::Approve { .. }));
        if !approved_before {
            return Err(format!(
                "step '{}' has the effect '{effect}', which policy.approval_required_for requires an approval for, but no approve step comes before it",
                step.name
            ));
        }
    }
    Ok(())
}

/// Whether a step may run now: a required effect needs an approval decision
/// already in the journal. Returns the effect that is missing one.
pub fn missing_approval(
    step: &StepDef,
    required: &BTreeSet<Effect>,
    journal: &[JournalEvent],
) -> Option<Effect> {
    let effects = step_effects(step).ok()?;
    let effect = *effects.intersection(required).next()?;
    let approved = journal.iter().any(|event| {
        matches!(
            event,
            JournalEvent::Decided {
                decision: Decision::Approve,
                ..
            }
        )
    });
    (!approved).then_some(effect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(text: &str) -> Flow {
        text.parse().unwrap()
    }

    const HEAD: &str = "name = \"x\"\ndescription = \"x\"\ncost_label = \"balanced\"\n";

    #[test]
    fn the_default_config_names_only_known_effects() {
        let names: Vec<String> = [
            "client communications",
            "pricing",
            "contracts",
            "public posts",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(parse_required(&names).unwrap().len(), 4);
    }

    #[test]
    fn an_unknown_effect_name_is_an_error_naming_it() {
        let error = parse_required(&["public posts".into(), "telepathy".into()]).unwrap_err();
        assert!(error.to_string().contains("telepathy"));
    }

    #[test]
    fn every_effect_parses_back_from_its_own_name() {
        for effect in Effect::ALL {
            assert_eq!(effect.as_str().parse::<Effect>().unwrap(), effect);
        }
    }

    #[test]
    fn a_flow_that_posts_without_an_approval_is_refused() {
        let text = format!(
            "{HEAD}[[steps]]\nname = \"brief\"\nkind = \"context\"\neffects = [\"public post\"]\n"
        );
        let required = parse_required(&["public posts".into()]).unwrap();
        let error = check_flow(&flow(&text), &required).unwrap_err();
        assert!(
            error.contains("'brief'") && error.contains("public posts"),
            "{error}"
        );
    }

    #[test]
    fn a_flow_that_posts_after_an_approval_is_accepted() {
        let text = format!(
            "{HEAD}[[steps]]\nname = \"w\"\nkind = \"context\"\n\
             [[steps]]\nname = \"r\"\nkind = \"approve\"\ndraft_from = \"w\"\nartifact_kind = \"d\"\n\
             [[steps]]\nname = \"p\"\nkind = \"context\"\neffects = [\"public post\"]\n"
        );
        let required = parse_required(&["public posts".into()]).unwrap();
        assert!(check_flow(&flow(&text), &required).is_ok());
    }

    #[test]
    fn a_step_with_a_required_effect_waits_for_an_approve_decision() {
        let text =
            format!("{HEAD}[[steps]]\nname = \"p\"\nkind = \"context\"\neffects = [\"refund\"]\n");
        let flow = flow(&text);
        let required = parse_required(&["refunds".into()]).unwrap();
        assert_eq!(
            missing_approval(&flow.steps[0], &required, &[]),
            Some(Effect::Refund)
        );
        let rejected = JournalEvent::Decided {
            step: "r".into(),
            approval_id: crate::domain::ApprovalId::new(),
            decision: Decision::Reject,
            by: "Maya".into(),
        };
        assert!(missing_approval(&flow.steps[0], &required, &[rejected]).is_some());
        let approved = JournalEvent::Decided {
            step: "r".into(),
            approval_id: crate::domain::ApprovalId::new(),
            decision: Decision::Approve,
            by: "Maya".into(),
        };
        assert_eq!(
            missing_approval(&flow.steps[0], &required, &[approved]),
            None
        );
    }
}
