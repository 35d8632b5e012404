//! Action buttons: retry, cancel, raise the cap, a routing choice. Each
//! token is taken once, in the transaction that does what it says.

use sqlx::{Any, Transaction};

use super::{Store, StoreResult, corrupt, now_ms};
use super::{Tx, to_json};
use crate::domain::{Action, ButtonToken};

/// What a pressed token turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionLookup {
    /// An action button, pressed for the first time: do this.
    Taken(Action),
    /// An action button pressed before.
    Used,
    /// Not an action button (maybe an approval's).
    Unknown,
}

impl Store {
    /// What a token is, without taking it: lets a caller prepare what the
    /// action needs (reads) before the transaction that takes it.
    pub async fn peek_action(&self, token: &ButtonToken) -> StoreResult<ActionLookup> {
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT action, used_at FROM action_buttons WHERE token = $1")
                .bind(token.as_str())
                .fetch_optional(&self.reads)
                .await?;
        Ok(match row {
            None => ActionLookup::Unknown,
            Some((_, Some(_))) => ActionLookup::Used,
            Some((action, None)) => ActionLookup::Taken(parse_action(&action)?),
        })
    }

    /// Stores action buttons outside any other change.
    pub async fn create_actions(&self, actions: &[(ButtonToken, Action)]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_actions(&mut tx, actions).await?;
        self.commit_durably(tx).await?;
        Ok(())
    }
}

impl Tx {
    /// Takes an action button's action, once. Commit it with the action's
    /// effect: a crash in between then loses neither.
    pub async fn use_action(&mut self, token: &ButtonToken) -> StoreResult<ActionLookup> {
        let action: Option<String> = sqlx::query_scalar(
            "UPDATE action_buttons SET used_at = $1 WHERE token = $2 AND used_at IS NULL RETURNING action",
        )
        .bind(now_ms())
        .bind(token.as_str())
        .fetch_optional(&mut *self.inner)
        .await?;
        if let Some(action) = action {
            return Ok(ActionLookup::Taken(parse_action(&action)?));
        }
        let known: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM action_buttons WHERE token = $1")
                .bind(token.as_str())
                .fetch_optional(&mut *self.inner)
                .await?;
        Ok(if known.is_some() {
            ActionLookup::Used
        } else {
            ActionLookup::Unknown
        })
    }

    pub async fn insert_actions(&mut self, actions: &[(ButtonToken, Action)]) -> StoreResult<()> {
        insert_actions(&mut self.inner, actions).await
    }
}

fn parse_action(text: &str) -> StoreResult<Action> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("action button: {e}")))
}

async fn insert_actions(
    tx: &mut Transaction<'_, Any>,
    actions: &[(ButtonToken, Action)],
) -> StoreResult<()> {
    for (token, action) in actions {
        sqlx::query("INSERT INTO action_buttons (token, action, created_at) VALUES ($1, $2, $3)")
            .bind(token.as_str())
            .bind(to_json(action)?)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
