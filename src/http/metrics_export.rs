//! Totals from the database set on the `metrics` recorder, rendered by
//! `metrics-exporter-prometheus`.

use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::store::{MetricTotals, Store, StoreError};

fn describe() {
    describe_counter!(
        "soloist_model_calls_total",
        "Model calls, by model, tier and outcome."
    );
    describe_counter!(
        "soloist_model_cache_hits_total",
        "Model calls answered from the response cache."
    );
    describe_counter!(
        "soloist_model_tokens_total",
        "Tokens the providers counted, by kind."
    );
    describe_gauge!(
        "soloist_model_cost_usd_total",
        "Spend on model calls in USD."
    );
    describe_counter!(
        "soloist_runs_finished_total",
        "Runs that completed or failed, by flow."
    );
    describe_gauge!(
        "soloist_run_duration_seconds_sum",
        "Seconds from start to finish of finished runs, by flow and status."
    );
    describe_counter!("soloist_approvals_total", "Approval decisions, by outcome.");
    describe_gauge!(
        "soloist_outbox_backlog",
        "Messages waiting to be delivered."
    );
    describe_counter!(
        "soloist_updates_handled_total",
        "Platform updates handled, by platform."
    );
}

/// The current totals in Prometheus text format. Each scrape records into
/// a recorder of its own (`with_local_recorder`): the totals are absolute,
/// so nothing needs to survive between scrapes, and two stores in one
/// process (tests) never mix their numbers.
pub async fn render(store: &Store) -> Result<String, StoreError> {
    let totals = store.metric_totals().await?;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        record(&totals);
    });
    Ok(handle.render())
}

fn record(totals: &MetricTotals) {
    for call in &totals.calls {
        let labels = [
            ("model", call.model.clone()),
            ("tier", call.tier.clone()),
            ("outcome", call.outcome.clone()),
        ];
        counter!("soloist_model_calls_total", &labels).absolute(as_u64(call.calls));
        counter!("soloist_model_cache_hits_total", &labels).absolute(as_u64(call.cache_hits));
        for (kind, n) in [
            ("input", call.input_tokens),
            ("cached_input", call.cached_input_tokens),
            ("output", call.output_tokens),
        ] {
            let mut labels = labels.to_vec();
            labels.push(("kind", kind.to_string()));
            counter!("soloist_model_tokens_total", &labels).absolute(as_u64(n));
        }
        gauge!("soloist_model_cost_usd_total", &labels).set(call.cost_usd);
    }
    for (flow, status, runs, seconds) in &totals.finished_runs {
        let labels = [("flow", flow.clone()), ("status", status.clone())];
        counter!("soloist_runs_finished_total", &labels).absolute(as_u64(*runs));
        gauge!("soloist_run_duration_seconds_sum", &labels).set(*seconds);
    }
    for (decision, count) in &totals.decisions {
        counter!("soloist_approvals_total", "outcome" => decision.clone()).absolute(as_u64(*count));
    }
    gauge!("soloist_outbox_backlog").set(totals.outbox_backlog as f64);
    for (platform, count) in &totals.updates {
        counter!("soloist_updates_handled_total", "platform" => platform.clone())
            .absolute(as_u64(*count));
    }
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
