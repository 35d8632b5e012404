//! Flow branching as data: a step's outcome names the next step, loops run
//! a step again, every target is checked when flows load, and the route is
//! journaled so replay rebuilds a branching run exactly.

use soloist::domain::{ChatRef, JournalEvent, Platform, RunId, RunInput, RunStatus};
use soloist::engine::{RunState, StartRun, render_replay};

use crate::fake_llm::Behavior;
use crate::helpers::{Db, TestApp, button, drain, texts};
use crate::on_both_backends;

on_both_backends!(
    a_three_way_branch_runs_the_step_its_outcome_names,
    a_loop_runs_a_step_twice_and_the_run_completes,
    a_loop_that_never_ends_fails_the_run_instead_of_spinning,
    a_rejection_routed_back_to_the_writer_asks_for_approval_afresh,
    a_flow_file_with_an_unknown_target_is_refused_at_start_naming_file_and_step,
    a_branching_run_replays_exactly_from_its_journal,
    a_journal_written_before_routes_resumes_at_its_first_step_without_output,
);

/// A model sorts the request into hot / borderline / cold; each tier has
/// its own step, and only the named one runs.
const TRIAGE: &str = r#"
name = "triage"
description = "Sort a request into a tier and answer it the tier's way."
cost_label = "balanced"

[[steps]]
name = "classify"
kind = "generate"
tier = "fast"
system = "system"
prompt = "draft"
max_tokens = 10
outcomes = ["hot", "borderline", "cold"]
next = { hot = "reply", borderline = "ask", cold = "decline" }

[[steps]]
name = "reply"
kind = "generate"
tier = "fast"
system = "system"
prompt = "draft"
max_tokens = 100
next = "end"

[[steps]]
name = "ask"
kind = "generate"
tier = "fast"
system = "system"
prompt = "draft"
max_tokens = 100
next = "end"

[[steps]]
name = "decline"
kind = "generate"
tier = "fast"
system = "system"
prompt = "draft"
max_tokens = 100
"#;

/// Write, then check; the check sends the run back to write until it says
/// done.
const REWRITE: &str = r#"
name = "rewrite"
description = "Write until the checker is happy."
cost_label = "balanced"

[[steps]]
name = "write"
kind = "generate"
tier = "fast"
system = "system"
prompt = "rewrite"
max_tokens = 100

[[steps]]
name = "check"
kind = "generate"
tier = "fast"
system = "system"
prompt = "check"
max_tokens = 10
outcomes = ["again", "done"]
next = { again = "write", done = "end" }
"#;

/// The draft flow, but a rejection goes back to the writer.
const RETRY_ON_REJECT: &str = r#"
name = "persist"
description = "Draft; on a rejection, write it again."
cost_label = "balanced"

[[steps]]
name = "write"
kind = "generate"
tier = "fast"
system = "system"
prompt = "draft"
max_tokens = 100
# Not deterministic: a second round is a new call, not a cached answer.
temperature = 0.7

[[steps]]
name = "review"
kind = "approve"
draft_from = "write"
artifact_kind = "draft"
next = { rejected = "write" }
"#;

fn start(flow: &str, key: &str) -> StartRun {
    StartRun {
        flow: flow.into(),
        chat: ChatRef::new(Platform::Console, "console"),
        request: format!("a reply to the lead from Forno Velho ({key})"),
        requested_by: "Maya".into(),
        idempotency_key: key.into(),
    }
}

async fn run_to_rest(app: &TestApp, flow: &str, key: &str) -> RunId {
    let run = app.app.engine.start(start(flow, key)).await.unwrap();
    app.app.engine.drive(run).await.unwrap();
    run
}

fn routes(journal: &[JournalEvent]) -> Vec<(String, Option<String>, String)> {
    journal
        .iter()
        .filter_map(|event| match event {
            JournalEvent::Routed { from, outcome, to } => {
                Some((from.clone(), outcome.clone(), to.clone()))
            }
            _ => None,
        })
        .collect()
}

fn completed_steps(journal: &[JournalEvent]) -> Vec<String> {
    journal
        .iter()
        .filter_map(|event| match event {
            JournalEvent::StepCompleted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

async fn a_three_way_branch_runs_the_step_its_outcome_names(db: Db) {
    let app = TestApp::spawn(db).await.with_flow("triage", TRIAGE).await;
    for (answer, step) in [
        ("Hot", "reply"),
        ("borderline.", "ask"),
        ("cold", "decline"),
    ] {
        app.llm
            .then(Behavior::reply(answer))
            .then(Behavior::reply(&format!("the {step} text")));

        let run = run_to_rest(&app, "triage", &format!("triage-{step}")).await;

        let state = app.app.engine.state(run).await.unwrap();
        assert_eq!(state.status, RunStatus::Completed, "{answer}");
        let ran: Vec<_> = state.outputs.keys().cloned().collect();
        let mut expected = vec!["classify".to_string(), step.to_string()];
        expected.sort();
        assert_eq!(ran, expected, "{answer}: only the named branch ran");
        assert_eq!(state.outputs[step]["text"], format!("the {step} text"));
        assert_eq!(
            state.outputs["classify"]["outcome"],
            answer.trim_end_matches('.').to_lowercase()
        );
    }
    assert_eq!(app.llm.calls(), 6, "two model calls per run, no more");
}

/// The rewrite flow's prompts: each sees the other's last answer, so a
/// second round is a new prompt (not a cached answer).
fn write_loop_prompts(app: &TestApp) {
    let dir = app.home.path().join("prompts");
    std::fs::create_dir_all(&dir).unwrap();
    let rewrite = "{% if outputs.check is defined %}The checker said: {{ outputs.check.text }}\n{% endif %}Write: {{ request }}";
    std::fs::write(dir.join("rewrite.md"), rewrite).unwrap();
    std::fs::write(
        dir.join("check.md"),
        "Say again or done: {{ outputs.write.text }}",
    )
    .unwrap();
}

async fn a_loop_runs_a_step_twice_and_the_run_completes(db: Db) {
    let app = TestApp::spawn(db).await;
    write_loop_prompts(&app);
    let app = app.with_flow("rewrite", REWRITE).await;
    for answer in ["first version", "again", "second version", "done"] {
        app.llm.then(Behavior::reply(answer));
    }

    let run = run_to_rest(&app, "rewrite", "rewrite-1").await;

    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.outputs["write"]["text"], "second version");
    assert_eq!(state.outputs["check"]["outcome"], "done");
    let journal = app.app.store.journal(run).await.unwrap();
    assert_eq!(
        completed_steps(&journal),
        ["write", "check", "write", "check"]
    );
    assert_eq!(app.llm.calls(), 4);
}

async fn a_rejection_routed_back_to_the_writer_asks_for_approval_afresh(db: Db) {
    let app = TestApp::spawn(db)
        .await
        .with_flow("persist", RETRY_ON_REJECT)
        .await;
    app.llm
        .then(Behavior::reply("A first, salesy draft."))
        .then(Behavior::reply("A second, calmer draft."));
    let run = run_to_rest(&app, "persist", "persist-1").await;
    let offered = drain(&app.app.store).await;
    assert!(texts(&offered).contains("A first, salesy draft."));

    app.press(&button(&offered, "Reject")).await;
    let second = app.say("Too salesy.").await;

    assert!(
        texts(&second).contains("A second, calmer draft."),
        "{}",
        texts(&second)
    );
    let reply = app.press(&button(&second, "Approve")).await;
    assert!(texts(&reply).contains("Approved."), "{}", texts(&reply));
    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.outputs["review"]["outcome"], "approved");
    assert_eq!(state.outputs["review"]["text"], "A second, calmer draft.");
    let journal = app.app.store.journal(run).await.unwrap();
    let offers: Vec<_> = journal
        .iter()
        .filter_map(|e| match e {
            JournalEvent::ApprovalRequested { approval_id, .. } => Some(*approval_id),
            _ => None,
        })
        .collect();
    assert_eq!(offers.len(), 2, "a new approval for the second draft");
    assert_ne!(offers[0], offers[1]);
    assert_eq!(app.count("artifacts").await, 2, "the rejection is kept too");
}

async fn a_flow_file_with_an_unknown_target_is_refused_at_start_naming_file_and_step(db: Db) {
    let app = TestApp::spawn(db).await;
    let bad = TRIAGE.replace("cold = \"decline\"", "cold = \"declin\"");
    let dir = app.home.path().join("config/flows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("triage.toml"), bad).unwrap();

    let mut settings = crate::helpers::test_settings(Some(&app.llm.base_url));
    settings.database.url = soloist::config::Secret::new(app.db.url.clone());
    let error = soloist::app::App::build(settings, app.home.path())
        .await
        .expect_err("a flow with a bad target must not start");

    let message = format!("{error:#}");
    assert!(message.contains("triage.toml"), "{message}");
    assert!(message.contains("step 'classify'"), "{message}");
    assert!(message.contains("'declin'"), "{message}");
}

async fn a_branching_run_replays_exactly_from_its_journal(db: Db) {
    let app = TestApp::spawn(db).await.with_flow("triage", TRIAGE).await;
    app.llm
        .then(Behavior::reply("cold"))
        .then(Behavior::reply("Thanks, but no."));
    let run = run_to_rest(&app, "triage", "triage-replay").await;

    let row = app.app.store.run(run).await.unwrap().unwrap();
    let journal = app.app.store.journal(run).await.unwrap();
    let replay = render_replay(&row, &journal);

    assert!(replay.contains("journal and run row agree."), "{replay}");
    assert!(
        replay.contains("step 'classify' ended 'cold': next 'decline'"),
        "{replay}"
    );
    assert!(
        replay.contains("completed steps: classify, decline"),
        "{replay}"
    );
    assert_eq!(
        routes(&journal),
        [
            ("classify".into(), Some("cold".into()), "decline".into()),
            ("decline".into(), None, "end".into()),
        ]
    );
    // Folding every prefix of the journal gives the step the engine ran
    // next: the cursor comes from the journal alone.
    let flow = app.app.engine.flows().get("triage").unwrap();
    let mut executed = Vec::new();
    for (index, event) in journal.iter().enumerate() {
        if let JournalEvent::StepCompleted { step, .. } = event {
            let before = RunState::fold(&journal[..index]).unwrap();
            assert_eq!(flow.steps[before.cursor(flow)].name, *step);
            executed.push(step.clone());
        }
    }
    assert_eq!(executed, ["classify", "decline"]);
    assert_eq!(
        RunState::fold(&journal).unwrap(),
        app.app.engine.state(run).await.unwrap()
    );
}

async fn a_journal_written_before_routes_resumes_at_its_first_step_without_output(db: Db) {
    let app = TestApp::spawn(db).await;
    let new = soloist::store::NewRun {
        flow: "draft".into(),
        chat: ChatRef::new(Platform::Console, "console"),
        input: RunInput {
            request: "a post about the Brand Sprint".into(),
            requested_by: "Maya".into(),
            event: None,
        },
        idempotency_key: "legacy-1".into(),
    };
    let (run, _) = app.app.store.create_run(&new).await.unwrap();
    // The journal an older soloist wrote: completions, no routes.
    let legacy = [
        (
            "brief",
            serde_json::json!({ "request": "a post about the Brand Sprint" }),
        ),
        (
            "recall",
            serde_json::json!({ "chunks": [], "quoted": "", "sources": "" }),
        ),
        (
            "write",
            serde_json::json!({ "text": "An old draft, written before the upgrade." }),
        ),
    ];
    let mut tx = app.app.store.begin().await.unwrap();
    for (step, output) in legacy {
        let event = JournalEvent::StepCompleted {
            step: step.into(),
            output,
        };
        tx.append_events(run, &[event]).await.unwrap();
    }
    tx.commit().await.unwrap();
    let journal = app.app.store.journal(run).await.unwrap();
    let flow = app.app.engine.flows().get("draft").unwrap();
    assert_eq!(RunState::fold(&journal).unwrap().cursor(flow), 3);

    app.app.engine.drive(run).await.unwrap();

    let offered = drain(&app.app.store).await;
    assert!(
        texts(&offered).contains("An old draft, written before the upgrade."),
        "{}",
        texts(&offered)
    );
    assert_eq!(app.llm.calls(), 0, "no step ran again");
    let row = app.app.store.run(run).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::WaitingApproval);
    app.press(&button(&offered, "Approve")).await;
    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.status, RunStatus::Completed);
    let journal = app.app.store.journal(run).await.unwrap();
    assert_eq!(
        routes(&journal),
        [("review".into(), Some("approved".into()), "end".into())]
    );
}

async fn a_loop_that_never_ends_fails_the_run_instead_of_spinning(db: Db) {
    let app = TestApp::spawn(db).await;
    write_loop_prompts(&app);
    let app = app.with_flow("rewrite", REWRITE).await;
    // Same answers every round: the checker never says done (and from the
    // second round on, the prompts repeat, so the cache answers).
    app.llm.always(Behavior::reply("again"));

    let run = run_to_rest(&app, "rewrite", "rewrite-forever").await;

    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.error.unwrap_or_default();
    assert!(error.contains("its loop does not end"), "{error}");
    assert_eq!(state.visits["write"], soloist::engine::MAX_VISITS);
}
