//! Crashes and restarts: a run resumes from its journal without repeating a
//! journaled step; replay rebuilds what the row says.

use std::time::Duration;

use soloist::domain::{ChatRef, Platform, RunStatus};
use soloist::engine::{StartRun, StepOutcome, render_replay};

use crate::helpers::{Db, TestApp, button, drain, texts};
use crate::on_both_backends;

on_both_backends!(
    a_run_interrupted_after_the_model_step_resumes_without_calling_the_model_again,
    a_live_lease_keeps_a_second_worker_away,
    a_decision_made_before_a_restart_is_acted_on_after_it,
    replay_rebuilds_the_same_state_as_the_run_row,
    a_run_that_cannot_resume_does_not_hold_up_the_others,
);

fn start(request: &str, key: &str) -> StartRun {
    StartRun {
        flow: "draft".into(),
        chat: ChatRef::new(Platform::Console, "console"),
        request: request.into(),
        requested_by: "Maya".into(),
        idempotency_key: key.into(),
    }
}

async fn a_run_interrupted_after_the_model_step_resumes_without_calling_the_model_again(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.engine.lease_secs = 0.2).await;
    let run = app
        .app
        .engine
        .start(start("a post", "crash-1"))
        .await
        .unwrap();
    // brief, recall, write: the model step is the third.
    for _ in 0..3 {
        assert_eq!(
            app.app.engine.try_execute_step(run).await.unwrap(),
            StepOutcome::Executed(RunStatus::Runnable)
        );
    }
    assert_eq!(app.llm.calls(), 1);
    // The "crashed" worker keeps its lease; nothing else may run its step
    // until the lease lapses.
    let restarted = app.restart(|s| s.engine.lease_secs = 0.2).await;
    assert!(restarted.engine.resume_runnable().await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let resumed = restarted.engine.resume_runnable().await.unwrap();

    assert_eq!(resumed, vec![run]);
    assert_eq!(
        app.llm.calls(),
        1,
        "the journaled model step must not run again"
    );
    let messages = drain(&restarted.store).await;
    assert_eq!(
        restarted.store.run(run).await.unwrap().unwrap().status,
        RunStatus::WaitingApproval
    );
    assert!(
        texts(&messages).contains("Draft for review"),
        "{}",
        texts(&messages)
    );
}

async fn a_live_lease_keeps_a_second_worker_away(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.engine.lease_secs = 30.0).await;
    let run = app
        .app
        .engine
        .start(start("a post", "lease-1"))
        .await
        .unwrap();
    app.app.engine.try_execute_step(run).await.unwrap();

    let other = app.restart(|_| {}).await;

    assert_eq!(
        other.engine.try_execute_step(run).await.unwrap(),
        StepOutcome::NotClaimed
    );
    assert_eq!(other.engine.drive(run).await.unwrap(), None);
    assert_eq!(app.llm.calls(), 0);
}

async fn a_decision_made_before_a_restart_is_acted_on_after_it(db: Db) {
    let app = TestApp::spawn(db).await;
    let draft = app.say("/draft a post").await;
    // The press is recorded, but the process dies before driving the run.
    let decided = app
        .app
        .store
        .decide(&button(&draft, "Approve").token, "Maya")
        .await
        .unwrap();

    let restarted = app.restart(|_| {}).await;
    let resumed = restarted.engine.resume_runnable().await.unwrap();

    assert_eq!(resumed, vec![decided.run_id]);
    assert!(texts(&drain(&restarted.store).await).starts_with("Approved."));
    assert_eq!(
        restarted
            .store
            .run(decided.run_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Completed
    );
}

async fn replay_rebuilds_the_same_state_as_the_run_row(db: Db) {
    let app = TestApp::spawn(db).await;
    let draft = app.say("/draft a post").await;
    app.press(&button(&draft, "Edit")).await;
    let second = app.say("Shorter.").await;
    app.press(&button(&second, "Approve")).await;

    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    let events = app.app.store.journal(run.id).await.unwrap();
    let replay = render_replay(&run, &events);

    assert!(replay.contains("journal and run row agree."), "{replay}");
    assert!(replay.contains("rebuilt state: completed"), "{replay}");
    assert!(
        replay.contains("chose edit") && replay.contains("chose approve"),
        "{replay}"
    );
}

async fn a_run_that_cannot_resume_does_not_hold_up_the_others(db: Db) {
    let app = TestApp::spawn(db).await;
    // A run of a flow whose file was since removed: it cannot be executed.
    let broken = soloist::store::NewRun {
        flow: "vanished".into(),
        chat: ChatRef::new(Platform::Console, "console"),
        input: soloist::domain::RunInput {
            request: "x".into(),
            requested_by: "Maya".into(),
        },
        idempotency_key: "broken".into(),
    };
    let (broken, _) = app.app.store.create_run(&broken).await.unwrap();
    let good = app.app.engine.start(start("a post", "good")).await.unwrap();

    let resumed = app.app.engine.resume_runnable().await.unwrap();

    assert_eq!(resumed, vec![broken, good]);
    let status = app.app.store.run(good).await.unwrap().unwrap().status;
    assert_eq!(status, RunStatus::WaitingApproval);
}
