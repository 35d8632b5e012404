//! The digest's retrieval and guardrail numbers for one day: how many
//! offered drafts drew on knowledge (and from which sources), and the
//! guardrail decisions by kind.

use super::{Store, StoreResult, Window};

/// Flag kinds as `guardrail_events.detail` starts them ("price: …"); kept
/// in step with `policy::FlagKind::as_str`.
const FLAG_KINDS: [&str; 10] = [
    "never_share",
    "secret",
    "link",
    "forbidden_word",
    "exclamations",
    "price",
    "injection",
    "pii",
    "client",
    "review",
];

impl Store {
    /// Runs that offered a draft for approval in the window.
    pub async fn drafts_offered(&self, window: Window) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COUNT(DISTINCT run_id) AS BIGINT) FROM approvals
             WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(window.from)
        .bind(window.to)
        .fetch_one(&self.reads)
        .await?)
    }

    /// (run id, journal payload) of every retrieval that returned
    /// knowledge chunks, in runs that offered a draft in the window. One
    /// day's drafts: a handful of rows, read in Rust for their sources.
    pub async fn retrievals_of_offered_drafts(
        &self,
        window: Window,
    ) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            r#"SELECT run_id, payload FROM journal
               WHERE event = 'step_completed' AND payload LIKE '%"chunks":[{%'
                 AND run_id IN (SELECT run_id FROM approvals
                                WHERE created_at >= $1 AND created_at < $2)
               ORDER BY run_id, seq"#,
        )
        .bind(window.from)
        .bind(window.to)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Guardrail decisions in the window by kind: each flag kind
    /// (`price`, `link`, …), then `blocked` and `limited`, largest first.
    pub async fn guardrail_counts(&self, window: Window) -> StoreResult<Vec<(String, i64)>> {
        let cases: String = FLAG_KINDS
            .iter()
            .map(|k| format!(" WHEN detail LIKE '{k}:%' THEN '{k}'"))
            .collect();
        let sql = format!(
            "SELECT CASE WHEN kind = 'flagged' THEN (CASE{cases} ELSE 'other' END) ELSE kind END AS k,
                    CAST(COUNT(*) AS BIGINT) AS n
             FROM guardrail_events
             WHERE kind IN ('flagged', 'blocked', 'limited')
               AND created_at >= $1 AND created_at < $2
             GROUP BY k ORDER BY n DESC, k"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(window.from)
            .bind(window.to)
            .fetch_all(&self.reads)
            .await?)
    }
}
