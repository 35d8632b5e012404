//! An approve step's own button words. A lead's borderline summary is not
//! a draft to approve but a choice to make: the flow file says
//! `labels = { approve = "Pursue", reject = "Decline", edit = "" }` and the
//! operator sees Pursue / Decline. Only the words change: the outcomes
//! stay `approved` / `rejected`, so `next` and the journal read the same
//! for every approve step.

use serde::Deserialize;

use crate::domain::Decision;
use crate::store::NewApproval;

/// Telegram shows about this many characters on a button of a narrow
/// phone; a longer label is cut there, so it is refused at load.
const MAX_LABEL_CHARS: usize = 24;

/// `labels = { … }` on an approve step. A missing word keeps the usual one;
/// `edit = ""` leaves the Edit button out (a summary has nothing to edit).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonLabels {
    #[serde(default)]
    pub approve: Option<String>,
    #[serde(default)]
    pub edit: Option<String>,
    #[serde(default)]
    pub reject: Option<String>,
}

impl ButtonLabels {
    fn word(&self, decision: Decision) -> Option<&str> {
        match decision {
            Decision::Approve => self.approve.as_deref(),
            Decision::Edit => self.edit.as_deref(),
            Decision::Reject => self.reject.as_deref(),
            Decision::Revise | Decision::Back => None,
        }
    }

    /// A sentence naming the step when a label cannot be shown: Approve
    /// and Reject must keep a word (the run could not go on without them).
    pub fn check(&self, step: &str) -> Result<(), String> {
        for (decision, word) in [
            (Decision::Approve, &self.approve),
            (Decision::Edit, &self.edit),
            (Decision::Reject, &self.reject),
        ] {
            let Some(word) = word else { continue };
            if word.trim().is_empty() && decision != Decision::Edit {
                return Err(format!(
                    "step '{step}': the {} button needs a label (only edit = \"\" may leave its button out)",
                    decision.as_str()
                ));
            }
            if word.chars().count() > MAX_LABEL_CHARS {
                return Err(format!(
                    "step '{step}': the label '{word}' is longer than {MAX_LABEL_CHARS} characters"
                ));
            }
        }
        Ok(())
    }

    /// Renames the offer's buttons, and leaves out Edit when its label is
    /// empty (its token too, so it cannot be pressed from an old message).
    pub fn apply(&self, approval: &mut NewApproval) {
        let hidden: Vec<_> = approval
            .buttons
            .iter()
            .filter(|(decision, _)| self.word(*decision).is_some_and(|w| w.trim().is_empty()))
            .map(|(_, token)| token.clone())
            .collect();
        approval
            .buttons
            .retain(|(_, token)| !hidden.contains(token));
        approval
            .message
            .buttons
            .retain(|button| !hidden.contains(&button.token));
        for (decision, token) in &approval.buttons {
            let Some(word) = self.word(*decision) else {
                continue;
            };
            for button in &mut approval.message.buttons {
                if button.token == *token {
                    button.label = word.trim().to_string();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(approve: &str, edit: Option<&str>, reject: &str) -> ButtonLabels {
        ButtonLabels {
            approve: Some(approve.into()),
            edit: edit.map(str::to_string),
            reject: Some(reject.into()),
        }
    }

    fn shown(approval: &NewApproval) -> Vec<&str> {
        approval
            .message
            .buttons
            .iter()
            .map(|b| b.label.as_str())
            .collect()
    }

    #[test]
    fn renamed_buttons_keep_their_decisions_and_an_empty_edit_is_left_out() {
        let mut approval = NewApproval::offer("ask", "Lead Rui: borderline", "text".into());
        labels("Pursue", Some(""), "Decline").apply(&mut approval);

        assert_eq!(shown(&approval), ["Pursue", "Decline"]);
        let decisions: Vec<Decision> = approval.buttons.iter().map(|(d, _)| *d).collect();
        assert_eq!(decisions, [Decision::Approve, Decision::Reject]);
        assert_eq!(
            approval.message.buttons[0].token, approval.buttons[0].1,
            "Pursue carries Approve's token"
        );
    }

    #[test]
    fn without_labels_the_usual_three_buttons_stay() {
        let mut approval = NewApproval::offer("review", "draft", "text".into());
        ButtonLabels::default().apply(&mut approval);
        assert_eq!(shown(&approval), ["Approve", "Edit", "Reject"]);
    }

    #[test]
    fn an_empty_approve_or_an_overlong_label_is_refused_with_the_step_named() {
        let empty = labels("", None, "Decline").check("ask").unwrap_err();
        let long = labels("Pursue this lead right away please", None, "No")
            .check("ask")
            .unwrap_err();
        assert!(
            empty.contains("step 'ask'") && empty.contains("approve"),
            "{empty}"
        );
        assert!(long.contains("longer than 24"), "{long}");
        assert!(labels("Pursue", Some(""), "Decline").check("ask").is_ok());
    }
}
