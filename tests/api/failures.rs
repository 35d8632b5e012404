//! Provider outages and missing configuration: retries, fallbacks, and when
//! every model failed, a sentence saying what failed and what to do; the
//! run is failed, not lost, and offers Retry / Switch tier / Cancel.

use std::time::Duration;

use soloist::agents::{ModelCall, ModelError, longest_call};
use soloist::domain::{CostLabel, RunStatus, Tier};
use soloist::store::Backend;

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
    a_reservation_is_released_when_a_failed_attempts_ledger_row_cannot_be_written,
    a_reservation_is_released_when_settling_fails_and_the_cost_is_still_charged,
    a_call_dropped_mid_request_gives_its_reservation_back,
    a_batch_reservation_is_released_when_its_step_is_not_committed,
    the_sweeper_releases_reservations_a_dead_process_left_and_cost_shows_them,
    an_unreachable_provider_with_credentials_in_its_url_never_shows_them,
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

// Budget reservations: every way a call can end gives its reservation back.

fn fast_call() -> ModelCall {
    ModelCall {
        tier: Tier::Fast,
        label: CostLabel::LowCost,
        system: "You are terse.".into(),
        prompt: "Say hello.".into(),
        max_tokens: 100,
        temperature: Some(0.7),
        run_id: None,
        flow: Some("test".into()),
        step: Some("hello".into()),
        reply_schema: None,
    }
}

async fn reserved_today(app: &TestApp) -> f64 {
    let (today, _) = app.app.engine.agents().budget().status().await.unwrap();
    today.reserved_usd
}

/// Waits (a guard releases from a task) until nothing is reserved.
async fn until_nothing_is_reserved(app: &TestApp) -> f64 {
    for _ in 0..150 {
        let reserved = reserved_today(app).await;
        if reserved == 0.0 {
            return reserved;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reserved_today(app).await
}

/// Makes the database refuse ledger rows with this outcome, as a full disk
/// or a broken connection would.
async fn refuse_ledger_rows(app: &TestApp, outcome: &str) {
    let pool = app.app.store.pool();
    match app.app.store.backend() {
        Backend::Sqlite => {
            let sql = format!(
                "CREATE TRIGGER refuse_rows BEFORE INSERT ON cost_ledger WHEN NEW.outcome = '{outcome}'
                 BEGIN SELECT RAISE(ABORT, 'the ledger refuses'); END"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let function = format!(
                "CREATE FUNCTION refuse_rows() RETURNS trigger AS $$
                 BEGIN IF NEW.outcome = '{outcome}' THEN RAISE EXCEPTION 'the ledger refuses'; END IF;
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            );
            sqlx::query(sqlx::AssertSqlSafe(function))
                .execute(pool)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TRIGGER refuse_rows BEFORE INSERT ON cost_ledger
                 FOR EACH ROW EXECUTE FUNCTION refuse_rows()",
            )
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

async fn a_reservation_is_released_when_a_failed_attempts_ledger_row_cannot_be_written(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm
        .always(Behavior::Status(500, "upstream exploded".into()));
    refuse_ledger_rows(&app, "http_500").await;

    let error = app.app.engine.agents().complete(&fast_call()).await;

    assert!(matches!(error, Err(ModelError::Ledger(_))), "{error:?}");
    assert_eq!(reserved_today(&app).await, 0.0, "released at once");
    let released = app.app.store.released_reservations_since(0).await.unwrap();
    assert_eq!(released.abandoned, 1, "{released:?}");
}

async fn a_reservation_is_released_when_settling_fails_and_the_cost_is_still_charged(db: Db) {
    let app = TestApp::spawn(db).await;
    refuse_ledger_rows(&app, "ok").await;

    let error = app.app.engine.agents().complete(&fast_call()).await;

    assert!(matches!(error, Err(ModelError::Ledger(_))), "{error:?}");
    let (today, _) = app.app.engine.agents().budget().status().await.unwrap();
    assert_eq!(today.reserved_usd, 0.0, "{today:?}");
    // gpt-4o-mini: 321 in at $0.15, 54 out at $0.60 per million.
    let cost = (321.0 * 0.15 + 54.0 * 0.60) / 1e6;
    assert!(
        (today.spent_usd - cost).abs() < 1e-12,
        "the money was spent even if its row is missing: {today:?}"
    );
}

async fn a_call_dropped_mid_request_gives_its_reservation_back(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.always(Behavior::Hang(Duration::from_secs(30)));
    let agents = app.app.engine.agents().clone();
    let call = tokio::spawn(async move { agents.complete(&fast_call()).await });
    for _ in 0..250 {
        if app.llm.calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.llm.calls(), 1, "the call is in flight");
    assert!(reserved_today(&app).await > 0.0);

    // Shutdown drops the call's future mid-request.
    call.abort();
    let _ = call.await;

    assert_eq!(until_nothing_is_reserved(&app).await, 0.0);
    let released = app.app.store.released_reservations_since(0).await.unwrap();
    assert_eq!(released.abandoned, 1, "{released:?}");
}

/// When a step's commit is refused (its lease was lost), its transition,
/// and the queued batch item with its reservation, are dropped.
async fn a_batch_reservation_is_released_when_its_step_is_not_committed(db: Db) {
    let app = TestApp::spawn(db).await;
    let agents = app.app.engine.agents();
    let call = ModelCall {
        label: CostLabel::Balanced,
        ..fast_call()
    };

    let item = agents.queue_for_batch(&call, "write").await.unwrap();

    let item = item.expect("the OpenAI provider has a batch API");
    assert!(reserved_today(&app).await > 0.0);
    drop(item);
    assert_eq!(until_nothing_is_reserved(&app).await, 0.0);
}

async fn the_sweeper_releases_reservations_a_dead_process_left_and_cost_shows_them(db: Db) {
    let app = TestApp::spawn(db).await;
    let agents = app.app.engine.agents();
    let held = agents.budget().reserve(0.25).await.unwrap().unwrap();
    // The process dies mid-call: nothing runs, not even a drop.
    std::mem::forget(held);

    let young = agents.sweep_reservations().await.unwrap();
    assert!(
        young.is_empty(),
        "a call that may still run keeps its money"
    );
    assert_eq!(reserved_today(&app).await, 0.25);
    let settings = agents.settings();
    let slowest_tries = settings.timeout_secs * 3;
    assert!(longest_call(settings) > Duration::from_secs(slowest_tries));

    // Later than the longest call could take:
    let swept = app.app.store.sweep_reservations(0).await.unwrap();

    assert_eq!(swept.len(), 1);
    assert_eq!(reserved_today(&app).await, 0.0);
    assert!(
        app.app
            .store
            .sweep_reservations(0)
            .await
            .unwrap()
            .is_empty()
    );
    let report = texts(&app.say("/cost").await);
    assert!(report.contains("1 swept ($0.2500)"), "{report}");
}

async fn an_unreachable_provider_with_credentials_in_its_url_never_shows_them(db: Db) {
    // Nothing listens on port 9: the request fails before any reply. (reqwest
    // moves `user:pass@` into a header; a key in the query stays in the URL
    // its error quotes.)
    let app = TestApp::spawn_with(db, |s| {
        for provider in s.models.providers.values_mut() {
            provider.base_url = "http://maya:hunter2secret@127.0.0.1:9/v1?key=hunter2secret".into();
        }
    })
    .await;

    let failure = texts(&app.say("/draft a post").await);

    assert!(failure.contains("could not be reached"), "{failure}");
    assert!(!failure.contains("hunter2secret"), "{failure}");
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Failed);
    let journal = app.app.store.journal(run.id).await.unwrap();
    let stored = serde_json::to_string(&journal).unwrap();
    assert!(stored.contains("could not be reached"), "{stored}");
    assert!(!stored.contains("hunter2secret"), "{stored}");
}
