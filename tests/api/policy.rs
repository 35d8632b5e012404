//! Guardrails end to end: personal data never reaches the model, text from
//! others is quoted as data and never acts, drafts are flagged on their
//! approval, required approvals cannot be skipped, bursts are limited.

use std::sync::Arc;

use serde_json::Value;
use soloist::app::App;
use soloist::domain::{ChatRef, Platform, RunId, RunStatus};
use soloist::engine::{Engine, EngineParts, StartRun};
use soloist::flows::Prompts;
use soloist::policy::{Guard, LIMITED, Origin, PiiKind, RateLimitSettings, Redactor};

use crate::fake_llm::Behavior;
use crate::helpers::{Db, TestApp, TestDb, button, test_settings, texts};
use crate::on_both_backends;

on_both_backends!(
    every_pii_line_reaches_the_model_as_placeholders_and_the_operator_sees_it_restored,
    every_injection_forwarded_or_as_a_lead_is_quoted_warned_and_waits_for_approval,
    a_draft_with_a_forbidden_word_a_wrong_price_a_never_share_item_and_an_unknown_link_is_flagged,
    a_burst_beyond_the_rate_limit_gets_one_sentence_and_no_model_call,
    the_policy_command_says_what_is_on_in_a_few_lines,
    a_step_with_a_required_effect_and_no_approval_in_the_journal_is_refused_by_the_engine,
    a_flow_that_skips_a_required_approval_is_refused_at_start_with_the_file_named,
    every_forwarded_injection_is_drafted_as_data_never_routed_and_waits_for_approval,
);

/// The text the model was given as the user's turn in its last request.
fn last_user_content(requests: &[Value]) -> String {
    let request = requests.last().expect("a model request");
    request["messages"]
        .as_array()
        .expect("chat messages")
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| {
            m["content"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| Some(m["content"].to_string()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn placeholder_label(kind: PiiKind) -> &'static str {
    match kind {
        PiiKind::Email => "[EMAIL_",
        PiiKind::Iban => "[IBAN_",
        PiiKind::PaymentCard => "[CARD_",
        PiiKind::TaxId => "[TAX_ID_",
        PiiKind::Passport => "[PASSPORT_",
        PiiKind::Phone => "[PHONE_",
        PiiKind::PostalAddress => "[ADDRESS_",
    }
}

async fn latest_run(app: &TestApp) -> RunId {
    app.app.store.recent_runs(1).await.unwrap().remove(0).id
}

async fn every_pii_line_reaches_the_model_as_placeholders_and_the_operator_sees_it_restored(
    db: Db,
) {
    // No chat window: each request then carries only its own line, so the
    // ledger's count of redacted items is exactly that line's values.
    let app = TestApp::spawn_with(db, |s| s.memory.chat_window_tokens = 0).await;
    let redactor = Redactor::new(&PiiKind::all(), &[]);
    let mut leaked = 0;
    for line in crate::fixtures::lines("adversarial/pii.txt") {
        let (text, kinds) = line.rsplit_once("=>").expect("text => kinds");
        let text = text.trim();
        // The model answers with the placeholders it was given; the
        // operator must see the values again.
        let mut redaction = redactor.redaction();
        let _ = redaction.redact(text);
        let values: Vec<String> = redaction.values().into_iter().map(str::to_owned).collect();
        let echo = redaction.redact(text);
        app.llm.then(Behavior::reply(&format!("Noted: {echo}")));

        let offer = app.say(&format!("/draft a reply to: {text}")).await;

        let body = serde_json::to_string(app.llm.requests().last().unwrap()).unwrap();
        let sent = last_user_content(&app.llm.requests());
        for value in &values {
            if body.contains(value.as_str()) {
                leaked += 1;
            }
        }
        for kind in kinds
            .split(',')
            .map(|k| PiiKind::parse(k).expect("a known kind"))
        {
            assert!(
                sent.contains(placeholder_label(kind)),
                "{kind:?} not redacted in {sent}"
            );
        }
        let shown = texts(&offer);
        for value in &values {
            assert!(
                shown.contains(value.as_str()),
                "{value} not restored in {shown}"
            );
        }
        let run = latest_run(&app).await;
        let ledger = app.app.store.ledger_for_run(run).await.unwrap();
        assert_eq!(ledger[0].redacted_items, values.len() as i64, "{text}");
        let detail = texts(&app.say(&format!("/run {}", run.short())).await);
        let (_, guardrails) = detail.split_once("Guardrails:").expect("guardrail lines");
        assert!(guardrails.contains("redacted:"), "{detail}");
        for value in &values {
            assert!(
                !guardrails.contains(value.as_str()),
                "the audit shows {value}"
            );
        }
    }
    assert_eq!(leaked, 0, "PII values that reached the model");
}

async fn every_injection_forwarded_or_as_a_lead_is_quoted_warned_and_waits_for_approval(db: Db) {
    let app = TestApp::spawn(db).await;
    let attacks = crate::fixtures::lines("adversarial/prompt_injection.txt");
    let mut warned = 0;
    let mut acted = 0;
    for (n, attack) in attacks.iter().enumerate() {
        for origin in [Origin::Forwarded, Origin::WebhookLead] {
            let start = StartRun {
                flow: "draft".into(),
                chat: ChatRef::new(Platform::Console, "console"),
                request: attack.clone(),
                requested_by: "Maya".into(),
                idempotency_key: format!("attack-{n}-{origin}"),
            };
            let engine = &app.app.engine;
            let run = engine.start_with_origin(start, origin).await.unwrap();
            engine.drive(run).await.unwrap();
            let offer = app.drain().await;

            // The text sits between the delimiters, which it cannot close.
            let sent = last_user_content(&app.llm.requests());
            let open = format!("⟦data from {origin}:");
            let close = format!("⟦end of data from {origin}⟧");
            let inside = sent
                .split_once(&open)
                .and_then(|(_, rest)| rest.split_once(&close))
                .map(|(inside, _)| inside)
                .unwrap_or_else(|| panic!("no delimiters in {sent}"));
            assert!(
                inside.contains(&soloist::policy::neutralize(attack)),
                "{sent}"
            );
            assert_eq!(sent.matches('⟦').count(), 2, "{sent}");

            // Nothing happened but an offer waiting for the operator.
            let state = engine.state(run).await.unwrap();
            if state.status != RunStatus::WaitingApproval {
                acted += 1;
            }
            let shown = texts(&offer);
            assert!(offer.iter().any(|m| !m.buttons.is_empty()), "{shown}");
            let warning = format!(
                "⚠ {} contains instructions to the assistant; they were not followed",
                origin.describe()
            );
            if soloist::policy::injection::detect(attack).fired() {
                assert!(shown.contains(&warning), "{shown}");
                warned += 1;
            }
        }
    }
    assert_eq!(acted, 0, "injections that led to an action");
    assert_eq!(app.count("decisions").await, 0);
    assert_eq!(app.count("artifacts").await, 0);
    assert!(
        warned * 12 >= attacks.len() * 2 * 10,
        "warned on {warned} of {}",
        attacks.len() * 2
    );
}

async fn a_draft_with_a_forbidden_word_a_wrong_price_a_never_share_item_and_an_unknown_link_is_flagged(
    db: Db,
) {
    let app = TestApp::spawn(db).await;
    let draft = "Our synergy is back: the Brand Sprint is now EUR 150. From my internal notes: book at https://cheap-sprints.example/now";
    app.llm.then(Behavior::reply(draft));

    let offer = app.say("/draft a post about the Brand Sprint").await;
    let shown = texts(&offer);
    assert!(shown.contains("'synergy'"), "{shown}");
    assert!(
        shown.contains("EUR 150 is not a configured price (Brand Sprint: EUR 4800)"),
        "{shown}"
    );
    assert!(shown.contains("'internal notes'"), "{shown}");
    assert!(shown.contains("cheap-sprints.example"), "{shown}");
    // Shown, not rewritten: approving saves the draft as the model wrote it.
    assert!(shown.contains(draft), "{shown}");
    app.press(&button(&offer, "Approve")).await;
    let run = latest_run(&app).await;
    let state = app.app.engine.state(run).await.unwrap();
    assert_eq!(state.outputs["review"]["text"], draft);
    let rows = app.app.store.guardrails_for_run(run).await.unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.kind == "flagged").count(),
        4,
        "{rows:?}"
    );
    let detail = texts(&app.say(&format!("/run {}", run.short())).await);
    assert!(
        detail.contains("Guardrails:") && detail.contains("flagged: price"),
        "{detail}"
    );
}

async fn a_burst_beyond_the_rate_limit_gets_one_sentence_and_no_model_call(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.policy.guard.rate_limits = RateLimitSettings {
            per_user_per_minute: 1,
            per_user_burst: 2,
            per_flow_per_minute: 0,
            per_flow_burst: 0,
        };
    })
    .await;
    app.say("/draft one").await;
    app.say("/draft two").await;
    assert_eq!(app.llm.calls(), 2);

    let third = app.say("/draft three").await;
    let routed = app.say("write me a post about audits").await;

    assert_eq!(texts(&third), LIMITED);
    assert_eq!(texts(&routed), LIMITED);
    assert_eq!(app.llm.calls(), 2, "no model call beyond the limit");
    assert_eq!(app.count("runs").await, 2);
}

async fn the_policy_command_says_what_is_on_in_a_few_lines(db: Db) {
    let app = TestApp::spawn(db).await;
    let reply = texts(&app.say("/policy").await);
    assert!(reply.starts_with("Guardrails on:"), "{reply}");
    assert!(reply.lines().count() <= 7, "{reply}");
    assert!(
        reply.contains(
            "Approval required for: client communications, public posts, pricing, contracts."
        ),
        "{reply}"
    );
    assert!(reply.contains("email"), "{reply}");
}

const POSTING_FLOW: &str = "name = \"post\"\ndescription = \"Posts the brief publicly.\"\ncost_label = \"low-cost\"\n\
    [[steps]]\nname = \"publish\"\nkind = \"context\"\neffects = [\"public post\"]\n";

async fn a_step_with_a_required_effect_and_no_approval_in_the_journal_is_refused_by_the_engine(
    db: Db,
) {
    // Loaded where nothing needs an approval, so the start check lets it in…
    let mut app = TestApp::spawn_with(db, |s| s.policy.approval_required_for.clear()).await;
    let flows = app.home.path().join("config/flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("post.toml"), POSTING_FLOW).unwrap();
    app.app = app
        .restart(|s| s.policy.approval_required_for.clear())
        .await;
    // …then run by an engine whose policy requires one for public posts.
    let mut strict = test_settings(Some(&app.llm.base_url));
    strict.policy.approval_required_for = vec!["public posts".into()];
    let engine = Engine::new(EngineParts {
        store: app.app.store.clone(),
        flows: app.app.engine.flows().clone(),
        prompts: Prompts::load(app.home.path()).unwrap(),
        agents: app.app.engine.agents().clone(),
        guard: Arc::new(Guard::new(&strict).unwrap()),
        settings: Arc::new(strict),
    });
    let run = engine
        .start(StartRun {
            flow: "post".into(),
            chat: ChatRef::new(Platform::Console, "console"),
            request: "announce it".into(),
            requested_by: "Maya".into(),
            idempotency_key: "post-1".into(),
        })
        .await
        .unwrap();

    let status = engine.drive(run).await.unwrap();

    assert_eq!(status, Some(RunStatus::Failed));
    let state = engine.state(run).await.unwrap();
    assert!(
        !state.outputs.contains_key("publish"),
        "the step must not have run"
    );
    let rows = app.app.store.guardrails_for_run(run).await.unwrap();
    assert!(rows.iter().any(|r| r.kind == "blocked"), "{rows:?}");
    let told = texts(&app.drain().await);
    assert!(
        told.contains("policy requires an approval before public posts"),
        "{told}"
    );
}

async fn a_flow_that_skips_a_required_approval_is_refused_at_start_with_the_file_named(db: Db) {
    let test_db = TestDb::create(db).await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("config/flows")).unwrap();
    std::fs::write(home.path().join("config/flows/post.toml"), POSTING_FLOW).unwrap();
    let mut settings = test_settings(None);
    settings.database.url = soloist::config::Secret::new(test_db.url.clone());

    let error = App::build(settings.clone(), home.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("config/flows/post.toml"), "{error}");
    assert!(error.contains("public posts"), "{error}");

    std::fs::remove_file(home.path().join("config/flows/post.toml")).unwrap();
    settings
        .policy
        .approval_required_for
        .push("telepathy".into());
    let error = App::build(settings, home.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("telepathy"), "{error}");
}

async fn every_forwarded_injection_is_drafted_as_data_never_routed_and_waits_for_approval(db: Db) {
    let app = TestApp::spawn(db).await;
    let attacks = crate::fixtures::lines("adversarial/prompt_injection.txt");
    let warning =
        "⚠ the forwarded text contains instructions to the assistant; they were not followed";
    let mut warned = 0;
    for (n, attack) in attacks.iter().enumerate() {
        let mut inbound = app.inbound(soloist::domain::InboundContent::Text(attack.clone()));
        inbound.origin = soloist::domain::Origin::Forwarded { from: "Rui".into() };

        let offer = app.deliver(&inbound).await;

        // One model call, the draft's: the router never read the text.
        assert_eq!(app.llm.calls(), n + 1, "{attack}");
        let sent = last_user_content(&app.llm.requests());
        assert!(sent.contains("⟦data from forwarded:"), "{sent}");
        assert_eq!(sent.matches('⟦').count(), 2, "{sent}");
        let shown = texts(&offer);
        assert!(offer.iter().any(|m| !m.buttons.is_empty()), "{shown}");
        if shown.contains(warning) {
            warned += 1;
        }
        let run = latest_run(&app).await;
        let state = app.app.engine.state(run).await.unwrap();
        assert_eq!(state.status, RunStatus::WaitingApproval, "{attack}");
    }
    assert_eq!(app.count("decisions").await, 0);
    assert!(warned >= 10, "warned on {warned} of {}", attacks.len());
}
