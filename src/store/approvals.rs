//! Approvals: created with their buttons by a step, decided once by a
//! button press. The engine journals the decision and wakes the run in the
//! same transaction (`engine::transitions`).

use sqlx::{Any, Transaction};

use super::messages::enqueue_in;
use super::runs::RunRow;
use super::{Backend, Store, StoreResult, corrupt, now_ms, to_json};
use super::{Tx, parse_id};
use crate::domain::{
    ApprovalId, ApprovalRole, Button, ButtonToken, ChatRef, Decision, Outbound, Platform, RunId,
};

#[derive(Debug, Clone)]
pub struct NewApproval {
    pub id: ApprovalId,
    pub step: String,
    pub draft: String,
    /// One token per choice; the message carries the same tokens.
    pub buttons: Vec<(Decision, ButtonToken)>,
    pub message: Outbound,
}

impl NewApproval {
    /// An approval for `draft` with fresh Approve / Edit / Reject tokens and
    /// the message that offers them.
    pub fn offer(step: &str, draft: &str, text: String) -> Self {
        Self::offer_with(step, draft, text, &Decision::ALL)
    }

    /// An approval offering these decisions (FUNNEL: Revise and Back
    /// besides the usual three).
    pub fn offer_with(step: &str, draft: &str, text: String, decisions: &[Decision]) -> Self {
        let buttons: Vec<(Decision, ButtonToken)> = decisions
            .iter()
            .map(|d| (*d, ButtonToken::generate()))
            .collect();
        let message = Outbound::text(text).with_buttons(
            buttons
                .iter()
                .map(|(decision, token)| Button {
                    label: decision.label().to_string(),
                    token: token.clone(),
                })
                .collect(),
        );
        let id = ApprovalId::new();
        NewApproval {
            id,
            step: step.to_string(),
            draft: draft.to_string(),
            buttons,
            message: message.linked_to(id, ApprovalRole::Offer),
        }
    }
}

/// An accepted decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub run_id: RunId,
    pub approval_id: ApprovalId,
    pub decision: Decision,
    /// The pressed button's own word when the flow renamed it ("Pursue").
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApprovalSummary {
    pub id: ApprovalId,
    pub run_id: RunId,
    pub chat: ChatRef,
    pub draft: String,
    pub buttons: Vec<Button>,
    pub created_at: i64,
}

impl Tx {
    /// Records `by`'s press of the button `token`: accepted only while the
    /// approval is pending, and only once, however many presses race.
    /// Returns the decision and the step that asked, or None when the
    /// approval is not open (unknown token, already decided).
    pub async fn decide_approval(
        &mut self,
        token: &ButtonToken,
        by: &str,
    ) -> StoreResult<Option<(Decided, String)>> {
        let now = now_ms();
        // The guarded UPDATE comes first: on PostgreSQL a racing press waits
        // on the row lock and then finds the approval no longer pending.
        let claimed: Option<(String, String, String, String)> = sqlx::query_as(
            "UPDATE approvals SET status = 'decided', decided_by = $1, decided_at = $2,
                    decision = (SELECT decision FROM approval_buttons WHERE token = $3)
             WHERE id = (SELECT approval_id FROM approval_buttons WHERE token = $3)
               AND status = 'pending'
             RETURNING id, run_id, step, decision",
        )
        .bind(by)
        .bind(now)
        .bind(token.as_str())
        .fetch_optional(&mut *self.inner)
        .await?;
        let Some((approval_id, run_id, step, decision)) = claimed else {
            return Ok(None);
        };
        let label: Option<String> =
            sqlx::query_scalar("SELECT label FROM approval_buttons WHERE token = $1")
                .bind(token.as_str())
                .fetch_optional(&mut *self.inner)
                .await?
                .flatten();
        let decided = Decided {
            run_id: parse_id(&run_id)?,
            approval_id: parse_id(&approval_id)?,
            decision: decision.parse().map_err(corrupt)?,
            label,
        };
        sqlx::query(
            "INSERT INTO decisions (run_id, approval_id, decision, decided_by, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&run_id)
        .bind(&approval_id)
        .bind(&decision)
        .bind(by)
        .bind(now)
        .execute(&mut *self.inner)
        .await?;
        Ok(Some((decided, step)))
    }

    /// The chat-platform chats an offer of this approval went to (the
    /// terminal has nothing to edit and is left out).
    pub async fn offer_chats(&mut self, approval_id: ApprovalId) -> StoreResult<Vec<ChatRef>> {
        let chats: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT platform, chat_id FROM outbox
             WHERE approval_id = $1 AND platform <> 'console' ORDER BY platform, chat_id",
        )
        .bind(approval_id.to_string())
        .fetch_all(&mut *self.inner)
        .await?;
        chats
            .into_iter()
            .map(|(platform, chat_id)| {
                Ok(ChatRef::new(
                    platform.parse::<Platform>().map_err(corrupt)?,
                    chat_id,
                ))
            })
            .collect()
    }

    /// Inserts the approval, its button tokens and the message offering
    /// them.
    pub async fn insert_approval(
        &mut self,
        run: &RunRow,
        approval: &NewApproval,
    ) -> StoreResult<()> {
        insert_approval(&mut self.inner, run, approval).await
    }
}

impl Store {
    /// Pending approvals, oldest first, with their buttons.
    pub async fn pending_approvals(&self) -> StoreResult<Vec<ApprovalSummary>> {
        let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
            "SELECT id, run_id, platform, chat_id, draft, created_at FROM approvals
             WHERE status = 'pending' ORDER BY created_at, id",
        )
        .fetch_all(&self.reads)
        .await?;
        let mut approvals = Vec::with_capacity(rows.len());
        for (id, run_id, platform, chat_id, draft, created_at) in rows {
            let buttons: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT token, decision, label FROM approval_buttons WHERE approval_id = $1",
            )
            .bind(&id)
            .fetch_all(&self.reads)
            .await?;
            let mut buttons = buttons
                .into_iter()
                .map(|(token, decision, label)| {
                    let decision: Decision = decision.parse().map_err(corrupt)?;
                    let token = ButtonToken::try_from(token).map_err(corrupt)?;
                    Ok((decision, token, label))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            buttons.sort_by_key(|(d, _, _)| Decision::EVERY.iter().position(|x| x == d));
            approvals.push(ApprovalSummary {
                id: parse_id(&id)?,
                run_id: parse_id(&run_id)?,
                chat: ChatRef::new(platform.parse::<Platform>().map_err(corrupt)?, chat_id),
                draft,
                buttons: buttons
                    .into_iter()
                    .map(|(d, token, label)| Button {
                        label: label.unwrap_or_else(|| d.label().to_string()),
                        token,
                    })
                    .collect(),
                created_at,
            });
        }
        Ok(approvals)
    }

    /// The platform message ids of the delivered offers of an approval in
    /// one chat, newest first: what an adapter edits when it closes them.
    pub async fn offer_message_ids(
        &self,
        approval_id: ApprovalId,
        chat: &ChatRef,
    ) -> StoreResult<Vec<String>> {
        Ok(self
            .offer_messages(approval_id, chat)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// The delivered offers of an approval in one chat with what each
    /// said, newest first: an adapter that edits an offer to close it can
    /// keep its text.
    pub async fn offer_messages(
        &self,
        approval_id: ApprovalId,
        chat: &ChatRef,
    ) -> StoreResult<Vec<(String, Outbound)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT platform_message_id, payload FROM outbox
             WHERE approval_id = $1 AND platform = $2 AND chat_id = $3
               AND status = 'delivered' AND platform_message_id IS NOT NULL
               AND approval_role = 'offer'
             ORDER BY id DESC",
        )
        .bind(approval_id.to_string())
        .bind(chat.platform.as_str())
        .bind(&chat.chat_id)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter()
            .map(|(id, payload)| {
                let offer = serde_json::from_str(&payload)
                    .map_err(|e| corrupt(format!("outbox payload: {e}")))?;
                Ok((id, offer))
            })
            .collect()
    }

    /// How many decisions the log holds for an approval (tests, replay).
    pub async fn decisions_for(
        &self,
        approval_id: ApprovalId,
    ) -> StoreResult<Vec<(String, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT decision, decided_by, reason FROM decisions WHERE approval_id = $1 ORDER BY id",
        )
        .bind(approval_id.to_string())
        .fetch_all(&self.reads)
        .await?)
    }
}

/// Inserts the approval, its button tokens and the message offering them.
async fn insert_approval(
    tx: &mut Transaction<'_, Any>,
    run: &RunRow,
    approval: &NewApproval,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO approvals (id, run_id, step, status, draft, platform, chat_id, created_at)
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7)",
    )
    .bind(approval.id.to_string())
    .bind(run.id.to_string())
    .bind(&approval.step)
    .bind(&approval.draft)
    .bind(run.chat.platform.as_str())
    .bind(&run.chat.chat_id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    // One statement for all the buttons, their list bound as JSON.
    let buttons: Vec<serde_json::Value> = approval
        .buttons
        .iter()
        .map(|(decision, token)| {
            // A label the step renamed (Pursue for Approve), kept for /approvals.
            let label = approval
                .message
                .buttons
                .iter()
                .find(|b| b.token == *token && b.label != decision.label())
                .map(|b| b.label.as_str());
            serde_json::json!({
                "token": token.as_str(),
                "decision": decision.as_str(),
                "label": label,
            })
        })
        .collect();
    if !buttons.is_empty() {
        let table = Backend::of(tx).json_rows(
            "$2",
            &[("token", false), ("decision", false), ("label", false)],
        );
        let sql = format!(
            "INSERT INTO approval_buttons (token, approval_id, decision, label)
             SELECT b.token, $1, b.decision, b.label FROM ({table}) b"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(approval.id.to_string())
            .bind(to_json(&buttons)?)
            .execute(&mut **tx)
            .await?;
    }
    enqueue_in(tx, &run.chat, Some(run.id), &approval.message).await
}
