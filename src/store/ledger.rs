//! The cost ledger: one row per model call, with the provider's own token
//! counts.

use sqlx::{Any, Transaction};

use super::{Store, StoreResult, now_ms};
use crate::domain::RunId;

#[derive(Debug, Clone, Default)]
pub struct LedgerEntry {
    pub run_id: Option<RunId>,
    pub step: Option<String>,
    pub flow: Option<String>,
    pub provider: String,
    pub model: String,
    pub tier: String,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    /// None when the model has no price in the price table.
    pub cost_usd: Option<f64>,
    pub latency_ms: i64,
    pub cache_hit: bool,
    /// `ok`, `blocked`, or the error kind (`timeout`, `http_500`, …).
    pub outcome: String,
    /// Sent through a batch API; `saved_usd` is what that saved.
    pub batched: bool,
    pub saved_usd: f64,
    /// POLICY: how many personal-data items the call had replaced (never
    /// the values).
    pub redacted_items: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostSummary {
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// Calls sent through a batch API, and what that saved.
    pub batched: i64,
    pub saved_usd: f64,
}

impl Store {
    pub async fn record_call(&self, entry: &LedgerEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_call(&mut tx, entry).await?;
        self.commit_durably(tx).await?;
        Ok(())
    }

    /// Ledger rows of one run, oldest first.
    pub async fn ledger_for_run(&self, run_id: RunId) -> StoreResult<Vec<LedgerEntry>> {
        type Row = (
            String,
            String,
            String,
            i64,
            i64,
            i64,
            f64,
            i64,
            i64,
            String,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT provider, model, tier, input_tokens, cached_input_tokens, output_tokens,
                    cost_usd, priced, latency_ms, outcome, redacted_items
             FROM cost_ledger WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id.to_string())
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    provider,
                    model,
                    tier,
                    input,
                    cached,
                    output,
                    cost,
                    priced,
                    latency,
                    outcome,
                    redacted,
                )| {
                    LedgerEntry {
                        run_id: Some(run_id),
                        provider,
                        model,
                        tier,
                        input_tokens: input,
                        cached_input_tokens: cached,
                        output_tokens: output,
                        cost_usd: (priced == 1).then_some(cost),
                        latency_ms: latency,
                        outcome,
                        redacted_items: redacted,
                        ..LedgerEntry::default()
                    }
                },
            )
            .collect())
    }

    /// Calls and spend since `since_ms` (Unix milliseconds).
    pub async fn cost_since(&self, since_ms: i64) -> StoreResult<CostSummary> {
        type Sums = (
            i64,
            Option<i64>,
            Option<i64>,
            Option<f64>,
            Option<i64>,
            Option<f64>,
        );
        let (calls, input, output, cost, batched, saved): Sums = sqlx::query_as(
            "SELECT COUNT(*), CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT),
                    SUM(cost_usd), CAST(SUM(batched) AS BIGINT), SUM(saved_usd)
             FROM cost_ledger WHERE created_at >= $1",
        )
        .bind(since_ms)
        .fetch_one(&self.reads)
        .await?;
        Ok(CostSummary {
            calls,
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            cost_usd: cost.unwrap_or(0.0),
            batched: batched.unwrap_or(0),
            saved_usd: saved.unwrap_or(0.0),
        })
    }
}

/// How `/cost` groups spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGroup {
    Flow,
    Model,
}

/// One line of a breakdown: the group, its calls, cache hits, blocked
/// calls, and spend.
#[derive(Debug, Clone, PartialEq)]
pub struct CostLine {
    pub name: String,
    pub calls: i64,
    pub cache_hits: i64,
    pub blocked: i64,
    pub cost_usd: f64,
}

/// A breakdown row as the ledger's GROUP BY queries select it.
pub(super) type CostRow = (String, i64, i64, i64, f64);

impl From<CostRow> for CostLine {
    fn from((name, calls, cache_hits, blocked, cost_usd): CostRow) -> Self {
        CostLine {
            name,
            calls,
            cache_hits,
            blocked,
            cost_usd,
        }
    }
}

impl Store {
    /// Spend since `since_ms`, grouped by flow or by model, largest first.
    pub async fn cost_by(&self, group: CostGroup, since_ms: i64) -> StoreResult<Vec<CostLine>> {
        let sql = match group {
            CostGroup::Flow => {
                "SELECT COALESCE(flow, '(none)'), COUNT(*), CAST(SUM(cache_hit) AS BIGINT),
                        CAST(SUM(CASE WHEN outcome = 'blocked' THEN 1 ELSE 0 END) AS BIGINT), SUM(cost_usd)
                 FROM cost_ledger WHERE created_at >= $1 GROUP BY COALESCE(flow, '(none)') ORDER BY 5 DESC, 1"
            }
            CostGroup::Model => {
                "SELECT provider || '/' || model, COUNT(*), CAST(SUM(cache_hit) AS BIGINT),
                        CAST(SUM(CASE WHEN outcome = 'blocked' THEN 1 ELSE 0 END) AS BIGINT), SUM(cost_usd)
                 FROM cost_ledger WHERE created_at >= $1 GROUP BY provider || '/' || model ORDER BY 5 DESC, 1"
            }
        };
        let rows: Vec<CostRow> = sqlx::query_as(sql)
            .bind(since_ms)
            .fetch_all(&self.reads)
            .await?;
        Ok(rows.into_iter().map(CostLine::from).collect())
    }
}

pub(super) async fn insert_call(
    tx: &mut Transaction<'_, Any>,
    entry: &LedgerEntry,
) -> StoreResult<()> {
    sqlx::query(

            "INSERT INTO cost_ledger (run_id, step, flow, provider, model, tier, input_tokens,
                 cached_input_tokens, output_tokens, cost_usd, priced, latency_ms, cache_hit, outcome,
                 batched, saved_usd, created_at, redacted_items)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(entry.run_id.map(|r| r.to_string()))
        .bind(entry.step.as_deref())
        .bind(entry.flow.as_deref())
        .bind(&entry.provider)
        .bind(&entry.model)
        .bind(&entry.tier)
        .bind(entry.input_tokens)
        .bind(entry.cached_input_tokens)
        .bind(entry.output_tokens)
        .bind(entry.cost_usd.unwrap_or(0.0))
        .bind(i64::from(entry.cost_usd.is_some()))
        .bind(entry.latency_ms)
        .bind(i64::from(entry.cache_hit))
        .bind(&entry.outcome)
        .bind(i64::from(entry.batched))
        .bind(entry.saved_usd)
        .bind(now_ms())
        .bind(entry.redacted_items)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
