//! The `autonomy_levels` and `autonomy_changes` tables (migration 0010),
//! and the human decisions a graduation is measured by (`decisions`, which
//! only people write: a decision by autonomy is journaled, not logged
//! there).

use sqlx::AnyConnection;

use super::{Change, Level};
use crate::store::{StoreError, StoreResult, now_ms};

/// How many decisions a graduation looks at.
pub const WINDOW: usize = 20;
/// The share of them that must be approvals unchanged, in percent.
pub const THRESHOLD_PERCENT: usize = 95;

/// A flow's most recent human decisions: how many, and how many of them
/// approved the draft as offered (no edit, revision, rejection or going
/// back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    pub decisions: usize,
    pub approved: usize,
}

impl Record {
    /// Percent approved unchanged (0 with no decisions).
    pub fn percent(self) -> usize {
        (self.approved * 100)
            .checked_div(self.decisions)
            .unwrap_or(0)
    }

    /// Enough decisions, and few enough of them changed anything.
    pub fn earns_graduation(self) -> bool {
        self.decisions >= WINDOW && self.approved * 100 >= self.decisions * THRESHOLD_PERCENT
    }
}

fn parse_level(text: &str) -> StoreResult<Level> {
    text.parse()
        .map_err(|e: super::UnknownLevel| StoreError::Corrupt(e.to_string()))
}

/// The level set in chat (or by graduation or drop-back), if any.
pub async fn chat_level(conn: &mut AnyConnection, flow: &str) -> StoreResult<Option<Level>> {
    let level: Option<String> =
        sqlx::query_scalar("SELECT level FROM autonomy_levels WHERE flow = $1")
            .bind(flow)
            .fetch_optional(&mut *conn)
            .await?;
    level.as_deref().map(parse_level).transpose()
}

/// Sets the level (unless the change only records an answer: `from` =
/// `to`) and writes the audit row.
pub async fn set_level(conn: &mut AnyConnection, change: &Change<'_>) -> StoreResult<()> {
    if change.from != change.to {
        sqlx::query(
            "INSERT INTO autonomy_levels (flow, level, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (flow) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at",
        )
        .bind(change.flow)
        .bind(change.to.as_str())
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    }
    record_change(conn, change).await
}

/// The audit row alone (a change the settings file made).
pub async fn record_change(conn: &mut AnyConnection, change: &Change<'_>) -> StoreResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO autonomy_changes (flow, from_level, to_level, changed_by, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(change.flow)
    .bind(change.from.as_str())
    .bind(change.to.as_str())
    .bind(change.by)
    .bind(change.reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The level the flow's last audit row left it at.
pub async fn last_recorded(conn: &mut AnyConnection, flow: &str) -> StoreResult<Option<Level>> {
    let level: Option<String> = sqlx::query_scalar(
        "SELECT to_level FROM autonomy_changes WHERE flow = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(flow)
    .fetch_optional(&mut *conn)
    .await?;
    level.as_deref().map(parse_level).transpose()
}

/// Every flow with an audit row.
pub async fn audited_flows(conn: &mut AnyConnection) -> StoreResult<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT flow FROM autonomy_changes")
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// When the flow's level last changed or a proposal for it was answered:
/// a graduation counts only the decisions made since.
pub async fn last_change_at(conn: &mut AnyConnection, flow: &str) -> StoreResult<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MAX(created_at) FROM autonomy_changes WHERE flow = $1")
            .bind(flow)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// The flow's last [`WINDOW`] human decisions (made after `since`, when
/// given).
pub async fn recent_decisions(
    conn: &mut AnyConnection,
    flow: &str,
    since: Option<i64>,
) -> StoreResult<Record> {
    let decisions: Vec<String> = sqlx::query_scalar(
        // A choice (a step whose buttons the flow renamed: Pursue /
        // Decline) is not a verdict on a draft: Decline is no correction.
        "SELECT d.decision FROM decisions d JOIN runs r ON r.id = d.run_id
         WHERE r.flow = $1 AND d.created_at > $2
           AND NOT EXISTS (SELECT 1 FROM approval_buttons b
                           WHERE b.approval_id = d.approval_id AND b.label IS NOT NULL)
         ORDER BY d.id DESC LIMIT $3",
    )
    .bind(flow)
    .bind(since.unwrap_or(i64::MIN))
    .bind(WINDOW as i64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Record {
        decisions: decisions.len(),
        approved: decisions.iter().filter(|d| *d == "approve").count(),
    })
}

/// The flows a person has decided on.
pub async fn flows_with_decisions(conn: &mut AnyConnection) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT r.flow FROM decisions d JOIN runs r ON r.id = d.run_id ORDER BY r.flow",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// The run's flow and chat (platform, chat id).
pub async fn run_flow_and_chat(
    conn: &mut AnyConnection,
    run_id: &str,
) -> StoreResult<Option<(String, String, String)>> {
    Ok(
        sqlx::query_as("SELECT flow, platform, chat_id FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graduation_needs_twenty_decisions_nineteen_of_them_clean() {
        let record = |decisions, approved| Record {
            decisions,
            approved,
        };
        assert!(record(20, 20).earns_graduation());
        assert!(record(20, 19).earns_graduation());
        assert!(!record(20, 18).earns_graduation());
        assert!(!record(19, 19).earns_graduation(), "too few decisions");
        assert_eq!(record(20, 19).percent(), 95);
        assert_eq!(record(0, 0).percent(), 0);
    }
}
