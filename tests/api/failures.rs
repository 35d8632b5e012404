//! Provider outages and missing configuration: the operator gets a sentence
//! saying what failed and what to do; the run is failed, not lost, and can be
//! retried.

use std::time::Duration;

use soloist::domain::RunStatus;

use crate::fake_llm::{Behavior, DEFAULT_DRAFT};
use crate::helpers::{Db, TestApp, texts};
use crate::on_both_backends;

on_both_backends!(
    a_provider_500_fails_the_run_with_a_sentence_and_retry_recovers_it,
    a_provider_timeout_is_reported_as_a_timeout,
    malformed_json_from_the_provider_is_reported_not_panicked_on,
    with_no_model_configured_draft_explains_how_to_configure_one,
);

async fn a_provider_500_fails_the_run_with_a_sentence_and_retry_recovers_it(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm
        .always(Behavior::Status(500, "upstream exploded".into()));

    let reply = texts(&app.say("/draft a post").await);

    assert!(reply.contains("HTTP 500"), "{reply}");
    assert!(reply.contains("/retry"), "{reply}");
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Failed);
    let ledger = app.app.store.ledger_for_run(run.id).await.unwrap();
    assert!(ledger.iter().all(|e| e.outcome == "http_500"), "{ledger:?}");

    app.llm.always(Behavior::reply(DEFAULT_DRAFT));
    let retried = app.say(&format!("/retry {}", run.id.short())).await;
    assert!(
        texts(&retried).contains(DEFAULT_DRAFT),
        "{}",
        texts(&retried)
    );
    assert_eq!(
        app.app.store.run(run.id).await.unwrap().unwrap().status,
        RunStatus::WaitingApproval
    );
}

async fn a_provider_timeout_is_reported_as_a_timeout(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.model.timeout_secs = 1).await;
    app.llm.always(Behavior::Hang(Duration::from_secs(3)));

    let reply = texts(&app.say("/draft a post").await);

    assert!(reply.contains("did not answer within 1 s"), "{reply}");
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        app.app.store.ledger_for_run(run.id).await.unwrap()[0].outcome,
        "timeout"
    );
}

async fn malformed_json_from_the_provider_is_reported_not_panicked_on(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::Malformed);

    let reply = texts(&app.say("/draft a post").await);

    assert!(reply.contains("failed"), "{reply}");
    assert_eq!(
        app.app.store.recent_runs(1).await.unwrap()[0].status,
        RunStatus::Failed
    );
}

async fn with_no_model_configured_draft_explains_how_to_configure_one(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.model.base_url = String::new();
        s.model.api_key = Default::default();
    })
    .await;

    let help = texts(&app.say("/help").await);
    let reply = texts(&app.say("/draft a post").await);

    assert!(help.contains("/draft"));
    assert!(
        reply.starts_with("No model is configured: set OPENAI_API_KEY"),
        "{reply}"
    );
    assert_eq!(
        app.count("runs").await,
        0,
        "no run may be started without a model"
    );
    assert_eq!(app.llm.calls(), 0);
}

#[tokio::test]
async fn an_unreachable_provider_is_reported_with_what_to_check() {
    // Port 9 (discard) on loopback: nothing listens there.
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.model.base_url = "http://127.0.0.1:9/v1".into()
    })
    .await;

    let reply = texts(&app.say("/draft a post").await);

    assert!(reply.contains("could not be reached"), "{reply}");
    assert!(reply.contains("OPENAI_BASE_URL"), "{reply}");
}
