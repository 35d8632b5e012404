//! The digest's numbers, each one SQL aggregate over the ledger, the runs
//! and the decisions: the digest never counts rows in Rust, so it stays
//! fast on a large ledger.

use std::fmt::Write;

use super::ledger::CostRow;
use super::{CostLine, Store, StoreResult};

/// A half-open time range in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

/// Spend of one flow on one day of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyCost {
    /// Index into the day boundaries the query was given.
    pub day: usize,
    pub flow: String,
    pub cost_usd: f64,
}

/// Grouping for [`Store::cost_lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSql {
    Flow,
    Model,
    Tier,
}

impl DigestSql {
    fn expression(self) -> &'static str {
        match self {
            DigestSql::Flow => "COALESCE(flow, '(none)')",
            DigestSql::Model => "provider || '/' || model",
            DigestSql::Tier => "tier",
        }
    }
}

impl Store {
    /// Runs that finished (completed or failed) in the window, by status.
    pub async fn finished_runs(&self, window: Window) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM runs
             WHERE status IN ('completed', 'failed') AND updated_at >= $1 AND updated_at < $2
             GROUP BY status ORDER BY status",
        )
        .bind(window.from)
        .bind(window.to)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Runs that failed in the window: id, flow, summary (newest first).
    pub async fn failed_runs(
        &self,
        window: Window,
        limit: i64,
    ) -> StoreResult<Vec<(String, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT id, flow, summary FROM runs
             WHERE status = 'failed' AND updated_at >= $1 AND updated_at < $2
             ORDER BY updated_at DESC, id LIMIT $3",
        )
        .bind(window.from)
        .bind(window.to)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Runs waiting now (for an approval, an answer, a batch), by status.
    pub async fn waiting_runs(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM runs WHERE status LIKE 'waiting%' GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.reads)
        .await?)
    }

    /// Spend in the window grouped by flow, model or tier, largest first.
    pub async fn cost_lines(&self, window: Window, group: DigestSql) -> StoreResult<Vec<CostLine>> {
        let key = group.expression();
        let sql = format!(
            "SELECT {key}, COUNT(*), CAST(SUM(cache_hit) AS BIGINT),
                    CAST(SUM(CASE WHEN outcome = 'blocked' THEN 1 ELSE 0 END) AS BIGINT), SUM(cost_usd)
             FROM cost_ledger WHERE created_at >= $1 AND created_at < $2
             GROUP BY {key} ORDER BY 5 DESC, 1"
        );
        let rows: Vec<CostRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(window.from)
            .bind(window.to)
            .fetch_all(&self.reads)
            .await?;
        Ok(rows.into_iter().map(CostLine::from).collect())
    }

    /// Per model in the window: cache hits, and the mean cost of its calls
    /// that were not served from the cache (what a hit would have cost).
    /// Plus what batching saved, summed from the ledger.
    pub async fn cache_and_batch_savings(&self, window: Window) -> StoreResult<(f64, f64)> {
        let rows: Vec<(i64, Option<f64>)> = sqlx::query_as(
            "SELECT CAST(SUM(cache_hit) AS BIGINT),
                    SUM(CASE WHEN cache_hit = 0 AND priced = 1 AND outcome = 'ok' THEN cost_usd END)
                      / NULLIF(SUM(CASE WHEN cache_hit = 0 AND priced = 1 AND outcome = 'ok' THEN 1 ELSE 0 END), 0)
             FROM cost_ledger WHERE created_at >= $1 AND created_at < $2
             GROUP BY provider, model",
        )
        .bind(window.from)
        .bind(window.to)
        .fetch_all(&self.reads)
        .await?;
        // A fold from +0.0: a float `sum` of nothing is -0.0 ("$-0.0000").
        let cache_saved = rows.iter().fold(0.0, |saved, (hits, mean)| {
            saved + *hits as f64 * mean.unwrap_or(0.0)
        });
        let batch_saved: Option<f64> = sqlx::query_scalar(
            "SELECT SUM(saved_usd) FROM cost_ledger WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(window.from)
        .bind(window.to)
        .fetch_one(&self.reads)
        .await?;
        Ok((cache_saved, batch_saved.unwrap_or(0.0)))
    }

    /// Approval decisions in the window, by decision.
    pub async fn decision_counts(&self, window: Window) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT decision, COUNT(*) FROM decisions WHERE created_at >= $1 AND created_at < $2
             GROUP BY decision ORDER BY decision",
        )
        .bind(window.from)
        .bind(window.to)
        .fetch_all(&self.reads)
        .await?)
    }

    /// Spend per day and flow, days given by their boundaries (n + 1
    /// instants for n local days, so daylight-saving days are 23 or 25
    /// hours long as they should be). One scan of the ledger.
    pub async fn daily_cost_by_flow(&self, boundaries: &[i64]) -> StoreResult<Vec<DailyCost>> {
        let (Some(first), Some(last)) = (boundaries.first(), boundaries.last()) else {
            return Ok(Vec::new());
        };
        let mut day = String::from("CASE");
        for i in 1..boundaries.len() {
            let _ = write!(day, " WHEN created_at < ${} THEN {}", i + 2, i - 1);
        }
        day.push_str(" END");
        let sql = format!(
            "SELECT CAST({day} AS BIGINT), COALESCE(flow, '(none)'), SUM(cost_usd) FROM cost_ledger
             WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(*first)
            .bind(*last);
        for boundary in &boundaries[1..] {
            query = query.bind(*boundary);
        }
        let rows: Vec<(i64, String, f64)> = query.fetch_all(&self.reads).await?;
        Ok(rows
            .into_iter()
            .map(|(day, flow, cost_usd)| DailyCost {
                day: usize::try_from(day).unwrap_or(0),
                flow,
                cost_usd,
            })
            .collect())
    }
}

/// Totals `/metrics` exports, read from the database at scrape time so every
/// process sharing it reports the same numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricTotals {
    pub calls: Vec<CallTotals>,
    /// (flow, status, runs, seconds from start to finish)
    pub finished_runs: Vec<(String, String, i64, f64)>,
    /// (decision, count)
    pub decisions: Vec<(String, i64)>,
    pub outbox_backlog: i64,
    /// (platform, updates handled)
    pub updates: Vec<(String, i64)>,
}

/// Model calls of one model, tier and outcome, all time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallTotals {
    pub model: String,
    pub tier: String,
    pub outcome: String,
    pub calls: i64,
    pub cache_hits: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

type CallRow = (String, String, String, i64, i64, i64, i64, i64, f64);

impl Store {
    pub async fn metric_totals(&self) -> StoreResult<MetricTotals> {
        let calls: Vec<CallRow> = sqlx::query_as(
            "SELECT provider || '/' || model, tier, outcome, COUNT(*), CAST(SUM(cache_hit) AS BIGINT),
                    CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(cached_input_tokens) AS BIGINT),
                    CAST(SUM(output_tokens) AS BIGINT), SUM(cost_usd)
             FROM cost_ledger GROUP BY provider || '/' || model, tier, outcome ORDER BY 1, 2, 3",
        )
        .fetch_all(&self.reads)
        .await?;
        let finished_runs = sqlx::query_as(
            "SELECT flow, status, COUNT(*), SUM(updated_at - created_at) / 1000.0 FROM runs
             WHERE status IN ('completed', 'failed') GROUP BY flow, status ORDER BY 1, 2",
        )
        .fetch_all(&self.reads)
        .await?;
        let decisions =
            sqlx::query_as("SELECT decision, COUNT(*) FROM decisions GROUP BY decision ORDER BY 1")
                .fetch_all(&self.reads)
                .await?;
        let updates = sqlx::query_as(
            "SELECT platform, COUNT(*) FROM inbound_updates WHERE processed_at IS NOT NULL
             GROUP BY platform ORDER BY 1",
        )
        .fetch_all(&self.reads)
        .await?;
        let calls = calls
            .into_iter()
            .map(
                |(model, tier, outcome, calls, cache_hits, input, cached, output, cost)| {
                    CallTotals {
                        model,
                        tier,
                        outcome,
                        calls,
                        cache_hits,
                        input_tokens: input,
                        cached_input_tokens: cached,
                        output_tokens: output,
                        cost_usd: cost,
                    }
                },
            )
            .collect();
        Ok(MetricTotals {
            calls,
            finished_runs,
            decisions,
            outbox_backlog: self.outbox_backlog().await?,
            updates,
        })
    }

    /// Messages waiting to be delivered, on every platform.
    pub async fn outbox_backlog(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
                .fetch_one(&self.reads)
                .await?,
        )
    }

    /// A trivial query: is the database answering?
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
