//! Provider outages and missing configuration: retries, fallbacks, and when
//! every model failed, a sentence saying what failed and what to do; the
//! run is failed, not lost, and offers Retry / Switch tier / Cancel.

use std::time::Duration;

use soloist::domain::{CostLabel, RunStatus};

use crate::fake_llm::{Behavior, DEFAULT_DRAFT};
use crate::helpers::{Db, TestApp, button, texts};
use crate::on_both_backends;

on_both_backends!(
    when_every_model_answers_500_the_run_fails_with_a_sentence_and_retry_recovers_it,
    a_provider_timeout_is_reported_as_a_timeout,
    one_malformed_reply_is_retried_and_the_draft_still_arrives,
    with_no_model_configured_draft_explains_how_to_configure_one,
    switching_a_failed_run_to_the_fast_tier_uses_the_fast_model,
    cancelling_a_failed_run_completes_it_as_cancelled,
);

async fn when_every_model_answers_500_the_run_fails_with_a_sentence_and_retry_recovers_it(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm
        .always(Behavior::Status(500, "upstream exploded".into()));

    let failure = app.say("/draft a post").await;
    let reply = texts(&failure);

    assert!(reply.contains("HTTP 500"), "{reply}");
    assert!(
        reply.contains("upstream exploded"),
        "the provider's words reach the operator: {reply}"
    );
    let labels: Vec<_> = failure[0]
        .buttons
        .iter()
        .map(|b| b.label.as_str())
        .collect();
    assert_eq!(labels, ["Retry", "Switch to the fast tier", "Cancel"]);
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Failed);
    let ledger = app.app.store.ledger_for_run(run.id).await.unwrap();
    // Two models in the quality chain (gpt-4o, gpt-4o-mini), 1 + 2 retries each.
    assert_eq!(ledger.len(), 6, "{ledger:?}");
    assert!(ledger.iter().all(|e| e.outcome == "http_500"), "{ledger:?}");
    assert_eq!(app.llm.calls(), 6);

    app.llm.always(Behavior::reply(DEFAULT_DRAFT));
    let retried = app.press(&button(&failure, "Retry")).await;
    assert!(
        texts(&retried).contains(DEFAULT_DRAFT),
        "{}",
        texts(&retried)
    );
    assert_eq!(
        app.app.store.run(run.id).await.unwrap().unwrap().status,
        RunStatus::WaitingApproval
    );
    let again = app.press(&button(&failure, "Retry")).await;
    assert_eq!(texts(&again), "That button was already used.");
}

async fn a_provider_timeout_is_reported_as_a_timeout(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.models.timeout_secs = 1;
        s.models.tiers.quality = vec!["openai/gpt-4o-mini".parse().unwrap()];
        s.models
            .labels
            .get_mut(&CostLabel::HighQuality)
            .unwrap()
            .retries = 0;
    })
    .await;
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

async fn one_malformed_reply_is_retried_and_the_draft_still_arrives(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::Malformed);

    let reply = texts(&app.say("/draft a post").await);

    assert!(reply.contains(DEFAULT_DRAFT), "{reply}");
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    let outcomes: Vec<_> = app
        .app
        .store
        .ledger_for_run(run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes, ["malformed", "ok"]);
}

async fn with_no_model_configured_draft_explains_how_to_configure_one(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        for provider in s.models.providers.values_mut() {
            provider.base_url = String::new();
            provider.api_key = Default::default();
        }
    })
    .await;

    let help = texts(&app.say("/help").await);
    let reply = texts(&app.say("/draft a post").await);
    let free_text = texts(&app.say("write me something nice").await);

    assert!(help.contains("/draft"));
    assert!(
        reply.starts_with("No model is configured: set OPENAI_API_KEY"),
        "{reply}"
    );
    assert!(free_text.contains("/draft"), "{free_text}");
    assert_eq!(
        app.count("runs").await,
        0,
        "no run may be started without a model"
    );
    assert_eq!(app.llm.calls(), 0);
}

async fn switching_a_failed_run_to_the_fast_tier_uses_the_fast_model(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.models.tiers.quality = vec!["openai/gpt-4o".parse().unwrap()];
        s.models
            .labels
            .get_mut(&CostLabel::HighQuality)
            .unwrap()
            .retries = 0;
    })
    .await;
    app.llm.then(Behavior::Status(503, "overloaded".into()));
    let failure = app.say("/draft a post").await;

    let switched = app
        .press(&button(&failure, "Switch to the fast tier"))
        .await;

    assert!(
        texts(&switched).contains(DEFAULT_DRAFT),
        "{}",
        texts(&switched)
    );
    let models: Vec<_> = app
        .llm
        .requests()
        .iter()
        .map(|r| r["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(models, ["gpt-4o", "gpt-4o-mini"]);
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    let journal =
        soloist::engine::render_replay(&run, &app.app.store.journal(run.id).await.unwrap());
    assert!(journal.contains("on the fast tier"), "{journal}");
}

async fn cancelling_a_failed_run_completes_it_as_cancelled(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.always(Behavior::Status(500, "down".into()));
    let failure = app.say("/draft a post").await;

    let reply = texts(&app.press(&button(&failure, "Cancel")).await);

    assert!(reply.contains("is cancelled"), "{reply}");
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.summary.as_deref(), Some("cancelled by Maya"));
    let retry = texts(&app.press(&button(&failure, "Retry")).await);
    assert!(retry.contains("no longer waiting"), "{retry}");
}

#[tokio::test]
async fn an_unreachable_provider_is_reported_with_what_to_check() {
    // Port 9 (discard) on loopback: nothing listens there.
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.models.providers.get_mut("openai").unwrap().base_url = "http://127.0.0.1:9/v1".into()
    })
    .await;

    let reply = texts(&app.say("/draft a post").await);

    assert!(reply.contains("could not be reached"), "{reply}");
    assert!(reply.contains("OPENAI_BASE_URL"), "{reply}");
}
