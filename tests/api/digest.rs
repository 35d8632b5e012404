//! The digest's numbers are what the ledger and the journal hold for a
//! seeded day, and its chart is a PNG of the expected size.

use chrono::{DateTime, Utc};
use soloist::digest::chart::{HEIGHT, WIDTH};
use soloist::domain::{JournalEvent, RunStatus};
use soloist::store::Store;

use crate::helpers::{Db, TestApp, TestDb, test_settings};
use crate::on_both_backends;

on_both_backends!(
    the_digest_numbers_equal_what_the_seeded_ledger_and_journal_hold,
    digest_command_sends_the_digest_with_its_chart_and_the_open_approvals,
);

fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

#[allow(clippy::too_many_arguments)]
async fn ledger(
    store: &Store,
    at: &str,
    flow: Option<&str>,
    model: &str,
    tier: &str,
    cost: f64,
    cache_hit: bool,
    saved: f64,
) {
    sqlx::query(
        "INSERT INTO cost_ledger (run_id, step, flow, provider, model, tier, input_tokens,
             cached_input_tokens, output_tokens, cost_usd, priced, latency_ms, cache_hit, outcome,
             batched, saved_usd, created_at)
         VALUES (NULL, NULL, $1, 'openai', $2, $3, 100, 0, 50, $4, 1, 10, $5, 'ok', $6, $7, $8)",
    )
    .bind(flow)
    .bind(model)
    .bind(tier)
    .bind(cost)
    .bind(i64::from(cache_hit))
    .bind(i64::from(saved > 0.0))
    .bind(saved)
    .bind(ms(at))
    .execute(store.pool())
    .await
    .unwrap();
}

async fn run(store: &Store, id: &str, status: &str, created: &str, updated: &str) {
    sqlx::query(
        "INSERT INTO runs (id, flow, status, idempotency_key, platform, chat_id, requested_by, input,
             summary, created_at, updated_at)
         VALUES ($1, 'draft', $2, $1, 'console', 'console', 'Maya', '{}', NULL, $3, $4)",
    )
    .bind(id)
    .bind(status)
    .bind(ms(created))
    .bind(ms(updated))
    .execute(store.pool())
    .await
    .unwrap();
}

async fn decision(store: &Store, run_id: &str, n: usize, decision: &str, at: &str) {
    let approval = format!("{run_id}-a{n}");
    sqlx::query(
        "INSERT INTO approvals (id, run_id, step, status, draft, platform, chat_id, decision, created_at)
         VALUES ($1, $2, 'approve', 'decided', 'text', 'console', 'console', $3, $4)",
    )
    .bind(&approval)
    .bind(run_id)
    .bind(decision)
    .bind(ms(at))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO decisions (run_id, approval_id, decision, decided_by, created_at)
         VALUES ($1, $2, $3, 'Maya', $4)",
    )
    .bind(run_id)
    .bind(&approval)
    .bind(decision)
    .bind(ms(at))
    .execute(store.pool())
    .await
    .unwrap();
}

async fn the_digest_numbers_equal_what_the_seeded_ledger_and_journal_hold(db: Db) {
    let test_db = TestDb::create(db).await;
    let store = Store::open(&test_db.url, 4).await.unwrap();
    // Lisbon is on UTC in February: "yesterday" is 2027-02-09 UTC.
    let settings = test_settings(None);
    let now = DateTime::parse_from_rfc3339("2027-02-10T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    ledger(
        &store,
        "2027-02-09T09:00:00Z",
        Some("draft"),
        "gpt-4o",
        "quality",
        0.30,
        false,
        0.0,
    )
    .await;
    ledger(
        &store,
        "2027-02-09T10:00:00Z",
        Some("draft"),
        "gpt-4o-mini",
        "fast",
        0.02,
        false,
        0.0,
    )
    .await;
    ledger(
        &store,
        "2027-02-09T11:00:00Z",
        Some("draft"),
        "gpt-4o",
        "quality",
        0.0,
        true,
        0.0,
    )
    .await;
    ledger(
        &store,
        "2027-02-09T23:59:00Z",
        None,
        "gpt-4o-mini",
        "router",
        0.01,
        false,
        0.01,
    )
    .await;
    // The day before (month and chart, not yesterday) and last month.
    ledger(
        &store,
        "2027-02-08T12:00:00Z",
        Some("draft"),
        "gpt-4o",
        "quality",
        0.50,
        false,
        0.0,
    )
    .await;
    ledger(
        &store,
        "2027-01-31T12:00:00Z",
        Some("draft"),
        "gpt-4o",
        "quality",
        9.00,
        false,
        0.0,
    )
    .await;
    run(
        &store,
        "r-done-1",
        "completed",
        "2027-02-09T08:00:00Z",
        "2027-02-09T08:05:00Z",
    )
    .await;
    run(
        &store,
        "r-done-2",
        "completed",
        "2027-02-09T09:00:00Z",
        "2027-02-09T09:30:00Z",
    )
    .await;
    run(
        &store,
        "r-failed",
        "failed",
        "2027-02-09T10:00:00Z",
        "2027-02-09T10:01:00Z",
    )
    .await;
    run(
        &store,
        "r-waiting",
        "waiting_approval",
        "2027-02-09T11:00:00Z",
        "2027-02-09T11:00:00Z",
    )
    .await;
    run(
        &store,
        "r-old",
        "completed",
        "2027-02-07T11:00:00Z",
        "2027-02-07T11:00:00Z",
    )
    .await;
    for (n, (kind, at)) in [
        ("approve", "2027-02-09T12:00:00Z"),
        ("approve", "2027-02-08T12:00:00Z"),
        ("approve", "2027-02-04T12:00:00Z"),
        ("edit", "2027-02-09T13:00:00Z"),
        ("reject", "2027-02-06T13:00:00Z"),
        // Outside the 7 days.
        ("reject", "2027-02-01T13:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        decision(&store, "r-done-1", n, kind, at).await;
    }

    let digest = soloist::digest::build(&store, &settings, now)
        .await
        .unwrap();
    let n = &digest.numbers;

    assert_eq!(n.date, "2027-02-09");
    assert_eq!((n.completed, n.failed, n.waiting), (2, 1, 1));
    assert_eq!(n.failed_runs[0].id, "r-failed");
    assert!(
        (n.cost_yesterday - 0.33).abs() < 1e-9,
        "{}",
        n.cost_yesterday
    );
    assert!((n.cost_month - 0.83).abs() < 1e-9, "{}", n.cost_month);
    assert_eq!((n.daily_cap, n.monthly_cap), (2.0, 40.0));
    assert_eq!((n.calls, n.cache_hits), (4, 1));
    assert!((n.cache_hit_rate - 25.0).abs() < 1e-9);
    // One hit on gpt-4o, whose uncached call cost 0.30 yesterday.
    assert!(
        (n.cache_saved_usd - 0.30).abs() < 1e-9,
        "{}",
        n.cache_saved_usd
    );
    assert!((n.batch_saved_usd - 0.01).abs() < 1e-9);
    let tiers: Vec<_> = n.tiers.iter().map(|l| (l.name.as_str(), l.calls)).collect();
    assert_eq!(tiers, [("quality", 2), ("fast", 1), ("router", 1)]);
    let by_model: Vec<_> = n
        .month_by_model
        .iter()
        .map(|l| (l.name.as_str(), l.calls))
        .collect();
    assert_eq!(by_model, [("openai/gpt-4o", 3), ("openai/gpt-4o-mini", 2)]);
    assert_eq!((n.approved, n.edited, n.rejected), (3, 1, 1));
    assert!((n.intervention_rate - 40.0).abs() < 1e-9);
    assert!(
        digest.text.contains("Spend yesterday: $0.3300 of $2.00"),
        "{}",
        digest.text
    );
    assert!(digest.text.contains("/run r-failed"), "{}", digest.text);
    assert!(
        digest
            .text
            .contains("3 approved as is, 1 edited, 1 rejected"),
        "{}",
        digest.text
    );

    let tz: chrono_tz::Tz = "Europe/Lisbon".parse().unwrap();
    let chart = soloist::digest::chart_data(&store, &settings, tz, now)
        .await
        .unwrap();
    assert_eq!(chart.days.len(), 14);
    let day = |i: usize| chart.flows.iter().map(|(_, v)| v[i]).sum::<f64>();
    assert!((day(13) - 0.33).abs() < 1e-9, "yesterday is the last bar");
    assert!((day(12) - 0.50).abs() < 1e-9);
    assert!(day(0).abs() < 1e-9);

    let png =
        image::load_from_memory_with_format(&digest.chart_png, image::ImageFormat::Png).unwrap();
    assert_eq!((png.width(), png.height()), (WIDTH, HEIGHT));
}

async fn digest_command_sends_the_digest_with_its_chart_and_the_open_approvals(db: Db) {
    let app = TestApp::spawn(db).await;
    let draft = app.say("/draft a post about the audit").await;
    assert_eq!(draft[0].buttons.len(), 3);

    let sent = app.say("/digest").await;

    assert_eq!(sent.len(), 2, "the digest, then the open approval");
    assert!(sent[0].text.starts_with("Daily digest"), "{}", sent[0].text);
    assert!(
        sent[0].text.contains("Approvals open: 1"),
        "{}",
        sent[0].text
    );
    assert!(sent[0].image.is_some());
    let labels: Vec<_> = sent[1].buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Approve", "Edit", "Reject"]);
    // A run of the digest flow, each step journaled.
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(
        (run.flow.as_str(), run.status),
        ("digest", RunStatus::Completed)
    );
    let steps: Vec<String> = app
        .app
        .store
        .journal(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            JournalEvent::StepCompleted { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["numbers", "render", "summary", "deliver"]);
}

/// `soloist digest --now` prints the digest (an operator's copy of the
/// template wins, as in the flow) and writes the chart where asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soloist_digest_now_prints_the_digest_from_the_operators_template_and_writes_the_chart() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("prompts")).unwrap();
    std::fs::create_dir_all(home.path().join("data")).unwrap();
    std::fs::write(
        home.path().join("prompts/digest.md"),
        "My digest for {{ date }}: {{ completed }} run(s) done.",
    )
    .unwrap();
    let chart = home.path().join("out.png");

    let output = crate::cluster::command(home.path(), None, &llm)
        .args(["digest", "--now", "--chart"])
        .arg(&chart)
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("My digest for "), "{stdout}");
    assert!(stdout.contains(": 0 run(s) done."), "{stdout}");
    assert!(
        stdout.contains(&format!("chart: {}", chart.display())),
        "{stdout}"
    );
    let png = image::open(&chart).unwrap();
    assert_eq!((png.width(), png.height()), (WIDTH, HEIGHT));
}
