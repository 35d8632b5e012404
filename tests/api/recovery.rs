//! Crashes and restarts: a run resumes from its journal without repeating a
//! journaled step; replay rebuilds what the row says.

use std::time::Duration;

use soloist::domain::{ChatRef, JournalEvent, Platform, RunStatus};
use soloist::engine::{Actor, StartRun, StepOutcome, render_replay};

use crate::fake_llm::{Behavior, DEFAULT_DRAFT};
use crate::helpers::{Db, TestApp, button, drain, texts};
use crate::on_both_backends;

on_both_backends!(
    a_run_interrupted_after_the_model_step_resumes_without_calling_the_model_again,
    a_live_lease_keeps_a_second_worker_away,
    a_decision_made_before_a_restart_is_acted_on_after_it,
    replay_rebuilds_the_same_state_as_the_run_row,
    a_run_that_cannot_resume_does_not_hold_up_the_others,
    a_step_slower_than_its_lease_keeps_its_run_and_is_paid_for_once,
    a_commit_under_a_claim_that_lapsed_and_was_taken_over_is_refused,
    a_drive_and_a_resume_of_one_run_make_one_model_call,
    gathering_steps_commit_with_the_model_step_and_a_crash_before_it_loses_only_them,
    a_commit_that_leaves_a_run_waiting_clears_its_lease_so_a_crash_after_it_holds_nothing,
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
    // brief, recall, write: the model step is the third. Each claim is
    // exclusive, the same engine's too: the next step waits for the kept
    // lease to lapse.
    for step in 0..3 {
        if step > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
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
    let maya = Actor {
        name: "Maya",
        user_id: "owner",
    };
    let decided = app
        .app
        .engine
        .decide(&button(&draft, "Approve").token, maya)
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
            event: None,
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

fn slow(millis: u64, text: &str) -> Behavior {
    Behavior::Delayed(
        Duration::from_millis(millis),
        Box::new(Behavior::reply(text)),
    )
}

async fn a_step_slower_than_its_lease_keeps_its_run_and_is_paid_for_once(db: Db) {
    let short_lease = |s: &mut soloist::config::Settings| {
        s.engine.lease_secs = 0.6;
        s.engine.heartbeat_secs = 0.1;
    };
    let app = TestApp::spawn_with(db, short_lease).await;
    app.llm.then(slow(1500, DEFAULT_DRAFT));
    let run = app
        .app
        .engine
        .start(start("a post", "slow-1"))
        .await
        .unwrap();
    let engine = app.app.engine.clone();
    let driving = tokio::spawn(async move { engine.drive(run).await });

    // Well past one lease, while the model call is still running.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let other_worker = app.restart(short_lease).await;
    let taken = other_worker.engine.resume_runnable().await.unwrap();

    assert!(taken.is_empty(), "a live worker's run was taken: {taken:?}");
    assert_eq!(
        driving.await.unwrap().unwrap(),
        Some(RunStatus::WaitingApproval)
    );
    assert_eq!(app.llm.calls(), 1, "the step was paid for twice");
}

async fn a_commit_under_a_claim_that_lapsed_and_was_taken_over_is_refused(db: Db) {
    // No renewal within the test: the first claim lapses mid-call.
    let app = TestApp::spawn_with(db, |s| {
        s.engine.lease_secs = 0.3;
        s.engine.heartbeat_secs = 100.0;
    })
    .await;
    app.llm
        .then(slow(800, "The superseded draft."))
        .then(slow(1500, "The draft of the current claim."));
    let run = app
        .app
        .engine
        .start(start("a post", "fence-1"))
        .await
        .unwrap();
    let engine = app.app.engine.clone();
    let first = tokio::spawn(async move { engine.drive(run).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The same process's resume worker takes the lapsed run over; the first
    // claim's call returns (and tries to commit) while the second's runs.
    let resumed = app.app.engine.resume_runnable().await.unwrap();
    first.await.unwrap().unwrap();

    assert_eq!(resumed, vec![run]);
    let journal = app.app.store.journal(run).await.unwrap();
    let drafts: Vec<String> = journal
        .iter()
        .filter_map(|e| match e {
            JournalEvent::StepCompleted { step, output } if step == "write" => {
                Some(output["text"].as_str().unwrap_or_default().to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(drafts, ["The draft of the current claim."]);
    assert_eq!(app.count("approvals").await, 1);
    let offers = texts(&drain(&app.app.store).await);
    assert!(!offers.contains("superseded"), "{offers}");
}

async fn a_drive_and_a_resume_of_one_run_make_one_model_call(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.always(slow(500, DEFAULT_DRAFT));
    let run = app
        .app
        .engine
        .start(start("a post", "burst-1"))
        .await
        .unwrap();
    let engine = &app.app.engine;

    // The resume worker picks the new run up; the controller's drive of the
    // same run comes a moment later, in the same process.
    let (resumed, driven) = tokio::join!(engine.resume_runnable(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        engine.drive(run).await
    });

    assert_eq!(app.llm.calls(), 1, "one step, one model call");
    assert_eq!(resumed.unwrap(), vec![run]);
    assert_eq!(driven.unwrap(), None, "the second claim must be refused");
}

/// The context and retrieval steps pay nothing and tell no one, so under one
/// claim they commit with the next step (one transaction, not three). The
/// journal ends the same, in step order; a crash before that commit loses
/// only work that is done again for free.
async fn gathering_steps_commit_with_the_model_step_and_a_crash_before_it_loses_only_them(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(slow(800, DEFAULT_DRAFT));
    let run = app
        .app
        .engine
        .start(start("a post", "gather-1"))
        .await
        .unwrap();
    let engine = app.app.engine.clone();
    let driving = tokio::spawn(async move { engine.drive(run).await });

    // During the model call: brief and recall are done but not committed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let during = app.app.store.journal(run).await.unwrap();
    assert_eq!(app.llm.calls(), 1);
    assert!(
        !during
            .iter()
            .any(|e| matches!(e, JournalEvent::StepCompleted { .. })),
        "a gathering step committed on its own: {during:?}"
    );

    assert_eq!(
        driving.await.unwrap().unwrap(),
        Some(RunStatus::WaitingApproval)
    );
    let steps: Vec<String> = app
        .app
        .store
        .journal(run)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            JournalEvent::StepCompleted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["brief", "recall", "write"]);
    assert_eq!(app.llm.calls(), 1);
}

/// The commit that leaves a run waiting also clears its lease (no separate
/// release, one write less a run): a worker that dies right after it holds
/// nothing, and the approval is acted on by another worker at once.
async fn a_commit_that_leaves_a_run_waiting_clears_its_lease_so_a_crash_after_it_holds_nothing(
    db: Db,
) {
    let app = TestApp::spawn_with(db, |s| s.engine.lease_secs = 0.2).await;
    let run = app
        .app
        .engine
        .start(start("a post", "dead-lease-1"))
        .await
        .unwrap();
    // brief, recall, write, each under a claim of its own that is kept,
    // as a worker that crashed after each commit would keep it.
    for step in 0..3 {
        if step > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        app.app.engine.try_execute_step(run).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The offer is committed by a worker with a long lease, which dies.
    let long_lease = |s: &mut soloist::config::Settings| s.engine.lease_secs = 30.0;
    let dying = app.restart(long_lease).await;
    assert_eq!(
        dying.engine.try_execute_step(run).await.unwrap(),
        StepOutcome::Executed(RunStatus::WaitingApproval)
    );
    let holder: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM runs WHERE id = $1")
        .bind(run.to_string())
        .fetch_one(dying.store.pool())
        .await
        .unwrap();
    assert_eq!(holder, None, "the waiting run still names a lease holder");
    let offer = drain(&dying.store).await;
    let maya = Actor {
        name: "Maya",
        user_id: "owner",
    };
    dying
        .engine
        .decide(&button(&offer, "Approve").token, maya)
        .await
        .unwrap();

    let survivor = app.restart(long_lease).await;

    assert_eq!(survivor.engine.resume_runnable().await.unwrap(), vec![run]);
    assert_eq!(
        survivor.store.run(run).await.unwrap().unwrap().status,
        RunStatus::Completed
    );
}
