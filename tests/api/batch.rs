//! Non-urgent steps go out in a batch at the batch price; the run waits,
//! then goes on when the batch comes back, and the ledger shows the saving.

use std::time::Duration;

use soloist::domain::RunStatus;

use crate::fake_llm::DEFAULT_DRAFT;
use crate::helpers::{Db, TestApp, drain, texts};
use crate::on_both_backends;

on_both_backends!(
    a_non_urgent_step_waits_for_the_batch_and_costs_half,
    nothing_is_sent_before_the_batch_is_due,
    a_crash_between_creating_a_batch_and_marking_it_adopts_the_batch_instead_of_paying_twice,
);

/// A flow like `draft`, but its model step may wait for a batch.
const WEEKLY: &str = r#"
name = "weekly"
description = "A weekly newsletter draft; no hurry."
cost_label = "balanced"

[[steps]]
name = "write"
kind = "generate"
tier = "fast"
system = "system"
prompt = "draft"
max_tokens = 400
urgent = false

[[steps]]
name = "review"
kind = "approve"
draft_from = "write"
artifact_kind = "newsletter"
"#;

async fn spawn(db: Db) -> TestApp {
    TestApp::spawn(db).await.with_flow("weekly", WEEKLY).await
}

async fn a_non_urgent_step_waits_for_the_batch_and_costs_half(db: Db) {
    let app = spawn(db).await;
    app.llm.then(crate::fake_llm::Behavior::reply(
        "{\"intent\": \"weekly\", \"confidence\": 0.9}",
    ));

    let queued = app.say("draft this week's newsletter").await;

    assert!(
        texts(&queued).contains("queued for the next batch"),
        "{}",
        texts(&queued)
    );
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::WaitingBatch);
    assert_eq!(app.llm.calls(), 1, "only the routing call went out");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = app.app.engine.agents().budget().status().await.unwrap().0;
    assert!(
        held.reserved_usd > 0.0,
        "the committed item holds its reservation: {held:?}"
    );

    let batcher = app.app.engine.agents().batcher();
    let woken = batcher.tick(true).await.unwrap();
    assert_eq!(woken, vec![run.id]);
    app.app.engine.drive(run.id).await.unwrap();

    let offered = drain(&app.app.store).await;
    assert!(
        texts(&offered).contains(DEFAULT_DRAFT),
        "{}",
        texts(&offered)
    );
    assert_eq!(
        app.app.store.run(run.id).await.unwrap().unwrap().status,
        RunStatus::WaitingApproval
    );
    assert_eq!(
        app.llm.batch_calls(),
        ["POST /files", "POST /batches", "GET /batches/batch_1"]
    );
    let ledger = app.app.store.ledger_for_run(run.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    // gpt-4o-mini at half price: 321 in at $0.075, 54 out at $0.30 per million.
    let half = (321.0 * 0.075 + 54.0 * 0.30) / 1e6;
    assert!(
        (ledger[0].cost_usd.unwrap() - half).abs() < 1e-12,
        "{ledger:?}"
    );
    let budget = app.app.engine.agents().budget().status().await.unwrap().0;
    let routing = (321.0 * 0.15 + 54.0 * 0.60) / 1e6;
    assert!(
        (budget.spent_usd - (routing + half)).abs() < 1e-12,
        "{budget:?}"
    );
    assert_eq!(budget.reserved_usd, 0.0, "the reservation became the cost");
    let report = texts(&app.say("/cost").await);
    assert!(report.contains("saved"), "{report}");
    assert!(
        batcher.tick(true).await.unwrap().is_empty(),
        "a finished batch is not collected twice"
    );
}

async fn nothing_is_sent_before_the_batch_is_due(db: Db) {
    let app = spawn(db).await;
    app.llm.then(crate::fake_llm::Behavior::reply(
        "{\"intent\": \"weekly\", \"confidence\": 0.9}",
    ));
    app.say("draft this week's newsletter").await;

    let woken = app.app.engine.agents().batcher().tick(false).await.unwrap();

    assert!(woken.is_empty());
    assert!(
        app.llm.batch_calls().is_empty(),
        "1 item of 20, younger than 300 s: not due"
    );
}

async fn a_crash_between_creating_a_batch_and_marking_it_adopts_the_batch_instead_of_paying_twice(
    db: Db,
) {
    let app = spawn(db).await;
    app.llm.then(crate::fake_llm::Behavior::reply(
        "{\"intent\": \"weekly\", \"confidence\": 0.9}",
    ));
    app.say("draft this week's newsletter").await;
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    // The provider creates the batch but its answer is slow; the process
    // dies before it hears back (its batcher task is dropped mid-request).
    app.llm.delay_next_batch_reply(Duration::from_secs(30));
    let batcher = app.app.engine.agents().batcher();
    let crashed = tokio::spawn(async move { batcher.tick(true).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.llm.batches_created() == 0 {
        assert!(std::time::Instant::now() < deadline, "no batch was created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crashed.abort();
    let _ = crashed.await;

    let restarted = app.restart(|_| {}).await;
    let woken = restarted
        .engine
        .agents()
        .batcher()
        .tick(true)
        .await
        .unwrap();

    assert_eq!(app.llm.batches_created(), 1, "{:?}", app.llm.batch_calls());
    assert_eq!(woken, vec![run.id], "the adopted batch came back");
    restarted.engine.drive(run.id).await.unwrap();
    assert_eq!(
        restarted.store.run(run.id).await.unwrap().unwrap().status,
        RunStatus::WaitingApproval
    );
    let ledger = restarted.store.ledger_for_run(run.id).await.unwrap();
    assert_eq!(ledger.len(), 1, "paid once: {ledger:?}");
    let budget = restarted.engine.agents().budget().status().await.unwrap().0;
    let routing = (321.0 * 0.15 + 54.0 * 0.60) / 1e6;
    let half = (321.0 * 0.075 + 54.0 * 0.30) / 1e6;
    assert!(
        (budget.spent_usd - (routing + half)).abs() < 1e-12,
        "{budget:?}"
    );
    assert_eq!(budget.reserved_usd, 0.0);
}
