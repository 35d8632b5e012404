//! Models and money: usage recorded as the provider reported it, the
//! response cache, the budget gate (which blocks before any HTTP request),
//! retries, fallbacks, and free-text routing. Fake servers speak the real
//! OpenAI and Anthropic JSON.

use std::time::{Duration, Instant};

use soloist::agents::{Completion, ModelCall, ModelError};
use soloist::domain::{CostLabel, RunStatus, Tier};

use crate::fake_llm::{Behavior, DEFAULT_DRAFT};
use crate::helpers::{Db, TestApp, button, texts};
use crate::on_both_backends;

on_both_backends!(
    usage_is_recorded_exactly_as_the_openai_server_reported_it,
    the_anthropic_provider_drafts_and_its_usage_is_recorded,
    a_cache_hit_makes_no_http_request_and_costs_nothing,
    a_high_quality_flow_is_never_answered_from_the_cache,
    a_call_the_budget_cannot_cover_makes_no_http_request,
    a_blocked_draft_offers_to_raise_the_cap_once_and_then_runs,
    when_the_first_model_does_not_fit_the_budget_the_cheaper_one_is_used,
    two_concurrent_calls_near_the_cap_cannot_both_start,
    when_the_high_estimate_does_not_fit_the_exact_count_decides,
    a_429_with_retry_after_is_retried_after_the_wait,
    a_500_falls_back_to_the_next_model_in_the_chain,
    a_clear_request_is_routed_to_its_flow_by_the_router_tier,
    an_unsure_router_asks_with_buttons_and_a_press_runs_the_choice,
    a_repeated_request_is_routed_from_the_cache,
    cost_reports_today_and_the_month_by_flow_and_model,
);

fn call(label: CostLabel, tier: Tier, temperature: Option<f64>) -> ModelCall {
    ModelCall {
        tier,
        label,
        system: "You are terse.".into(),
        prompt: "Say hello.".into(),
        max_tokens: 100,
        temperature,
        run_id: None,
        flow: Some("test".into()),
        step: Some("hello".into()),
        reply_schema: None,
        redacted_items: 0,
    }
}

async fn complete(app: &TestApp, call: &ModelCall) -> Result<Completion, ModelError> {
    app.app.engine.agents().complete(call).await
}

async fn usage_is_recorded_exactly_as_the_openai_server_reported_it(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.always(Behavior::Reply {
        text: "hello".into(),
        prompt_tokens: 1000,
        completion_tokens: 200,
        cached_tokens: 400,
    });

    let completion = complete(&app, &call(CostLabel::HighQuality, Tier::Quality, None))
        .await
        .unwrap();

    assert_eq!(
        (
            completion.input_tokens,
            completion.cached_input_tokens,
            completion.output_tokens
        ),
        (1000, 400, 200)
    );
    // gpt-4o: 600 uncached at $2.50, 400 cached at $1.25, 200 out at $10 per million.
    let expected = (600.0 * 2.50 + 400.0 * 1.25 + 200.0 * 10.0) / 1e6;
    assert!((completion.cost_usd.unwrap() - expected).abs() < 1e-12);
    let summary = app.app.store.cost_since(0).await.unwrap();
    assert_eq!(
        (summary.calls, summary.input_tokens, summary.output_tokens),
        (1, 1000, 200)
    );
    assert!((summary.cost_usd - expected).abs() < 1e-12);
}

async fn the_anthropic_provider_drafts_and_its_usage_is_recorded(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        let url = s.models.providers["openai"].base_url.clone();
        s.models.providers.get_mut("openai").unwrap().base_url = String::new();
        s.models.providers.get_mut("openai").unwrap().api_key = Default::default();
        let anthropic = s.models.providers.get_mut("anthropic").unwrap();
        anthropic.base_url = url;
        anthropic.api_key = soloist::config::Secret::new("sk-ant-test");
    })
    .await;
    app.llm.always(Behavior::Reply {
        text: DEFAULT_DRAFT.into(),
        prompt_tokens: 500,
        completion_tokens: 80,
        cached_tokens: 100,
    });

    let draft = app.say("/draft a post").await;

    assert!(texts(&draft).contains(DEFAULT_DRAFT), "{}", texts(&draft));
    let request = &app.llm.requests()[0];
    assert_eq!(request["model"], "claude-sonnet-4-5");
    assert!(
        request["system"]
            .to_string()
            .contains("Harbor & Pine Studio"),
        "{request}"
    );
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    let ledger = app.app.store.ledger_for_run(run.id).await.unwrap();
    assert_eq!(ledger[0].provider, "anthropic");
    assert_eq!(
        (
            ledger[0].input_tokens,
            ledger[0].cached_input_tokens,
            ledger[0].output_tokens
        ),
        (500, 100, 80)
    );
}

async fn a_cache_hit_makes_no_http_request_and_costs_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let deterministic = call(CostLabel::Balanced, Tier::Fast, Some(0.0));

    let first = complete(&app, &deterministic).await.unwrap();
    let second = complete(&app, &deterministic).await.unwrap();

    assert_eq!(app.llm.calls(), 1);
    assert_eq!(first.text, second.text);
    assert!(!first.cache_hit && second.cache_hit);
    assert_eq!(
        (second.input_tokens, second.output_tokens, second.cost_usd),
        (0, 0, Some(0.0))
    );
    let lines = app
        .app
        .store
        .cost_by(soloist::store::CostGroup::Model, 0)
        .await
        .unwrap();
    assert_eq!((lines[0].calls, lines[0].cache_hits), (2, 1));
}

async fn a_high_quality_flow_is_never_answered_from_the_cache(db: Db) {
    let app = TestApp::spawn(db).await;
    let creative = call(CostLabel::HighQuality, Tier::Fast, Some(0.0));

    complete(&app, &creative).await.unwrap();
    complete(&app, &creative).await.unwrap();

    assert_eq!(app.llm.calls(), 2);
}

async fn a_call_the_budget_cannot_cover_makes_no_http_request(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.policy.daily_budget_usd = 0.000_01).await;

    let error = complete(&app, &call(CostLabel::LowCost, Tier::Fast, None))
        .await
        .unwrap_err();

    assert!(matches!(error, ModelError::Blocked(_)), "{error:?}");
    assert!(error.to_string().contains("today's budget"), "{error}");
    assert!(error.to_string().contains("Nothing was spent"), "{error}");
    assert_eq!(app.llm.calls(), 0);
    let lines = app
        .app
        .store
        .cost_by(soloist::store::CostGroup::Model, 0)
        .await
        .unwrap();
    assert_eq!(lines[0].blocked, 1, "the blocked call is in the ledger");
}

async fn a_blocked_draft_offers_to_raise_the_cap_once_and_then_runs(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.policy.daily_budget_usd = 0.0005).await;

    let blocked = app.say("/draft a post").await;

    assert!(texts(&blocked).contains("not run"), "{}", texts(&blocked));
    assert_eq!(app.llm.calls(), 0);
    let raised = app
        .press(&button(&blocked, "Raise today's cap by $0.00 once"))
        .await;
    assert!(texts(&raised).contains("raised"), "{}", texts(&raised));
    let drafted = app.press(&button(&blocked, "Retry")).await;
    assert!(
        texts(&drafted).contains(DEFAULT_DRAFT),
        "{}",
        texts(&drafted)
    );
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::WaitingApproval);
    let budget = app.app.engine.agents().budget().status().await.unwrap().0;
    assert!(
        budget.spent_usd > 0.0 && budget.spent_usd <= 0.001,
        "{budget:?}"
    );
    assert_eq!(budget.reserved_usd, 0.0, "no reservation is left behind");
}

async fn when_the_first_model_does_not_fit_the_budget_the_cheaper_one_is_used(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.policy.daily_budget_usd = 0.002).await;

    let draft = app.say("/draft a post").await;

    assert!(texts(&draft).contains(DEFAULT_DRAFT));
    let models: Vec<_> = app
        .llm
        .requests()
        .iter()
        .map(|r| r["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        models,
        ["gpt-4o-mini"],
        "gpt-4o's worst case does not fit $0.002"
    );
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    let outcomes: Vec<_> = app
        .app
        .store
        .ledger_for_run(run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.model, e.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("gpt-4o".to_string(), "blocked".to_string()),
            ("gpt-4o-mini".into(), "ok".into())
        ]
    );
}

async fn two_concurrent_calls_near_the_cap_cannot_both_start(db: Db) {
    // One call's worst case (21 prompt tokens at $0.15 and 50 output tokens
    // at $0.60 per million: about $0.000033) fits $0.00005; two do not.
    let app = TestApp::spawn_with(db, |s| s.policy.daily_budget_usd = 0.000_05).await;
    app.llm.always(Behavior::Delayed(
        Duration::from_millis(300),
        Box::new(Behavior::reply("hi")),
    ));
    let low = call(CostLabel::LowCost, Tier::Fast, None);

    let (a, b) = tokio::join!(complete(&app, &low), complete(&app, &low));

    assert_eq!(app.llm.calls(), 1, "only one call may start");
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1);
    assert!(matches!(a.err().or(b.err()), Some(ModelError::Blocked(_))));
}

async fn a_429_with_retry_after_is_retried_after_the_wait(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::RateLimited(1));
    let started = Instant::now();

    let completion = complete(&app, &call(CostLabel::Balanced, Tier::Fast, None))
        .await
        .unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited as the provider said"
    );
    assert_eq!(completion.model, "openai/gpt-4o-mini");
    let models: Vec<_> = app
        .llm
        .requests()
        .iter()
        .map(|r| r["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        models,
        ["gpt-4o-mini", "gpt-4o-mini"],
        "the same model, after the wait"
    );
}

async fn a_500_falls_back_to_the_next_model_in_the_chain(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.models
            .labels
            .get_mut(&CostLabel::Balanced)
            .unwrap()
            .retries = 0;
    })
    .await;
    app.llm.then(Behavior::Status(500, "boom".into()));

    let completion = complete(&app, &call(CostLabel::Balanced, Tier::Quality, None))
        .await
        .unwrap();

    assert_eq!(completion.model, "openai/gpt-4o-mini");
    let models: Vec<_> = app
        .llm
        .requests()
        .iter()
        .map(|r| r["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(models, ["gpt-4o", "gpt-4o-mini"]);
}

async fn a_clear_request_is_routed_to_its_flow_by_the_router_tier(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::reply(
        "{\"intent\": \"draft\", \"confidence\": 0.93}",
    ));

    let replies = app
        .say("write a LinkedIn post about the new audit price")
        .await;

    assert!(
        texts(&replies).contains(DEFAULT_DRAFT),
        "{}",
        texts(&replies)
    );
    let requests = app.llm.requests();
    assert_eq!(
        requests[0]["model"], "gpt-4o-mini",
        "routing uses the router tier"
    );
    assert!(
        requests[0]
            .to_string()
            .contains("write a LinkedIn post about the new audit price")
    );
    assert_eq!(
        requests[1]["model"], "gpt-4o",
        "the draft uses the quality tier"
    );
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(
        run.input.request,
        "write a LinkedIn post about the new audit price"
    );
}

async fn an_unsure_router_asks_with_buttons_and_a_press_runs_the_choice(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::reply(
        "{\"intent\": \"draft\", \"confidence\": 0.3}",
    ));

    let question = app.say("pricing thing for linkedin maybe").await;

    assert!(
        texts(&question).contains("not sure"),
        "{}",
        texts(&question)
    );
    assert_eq!(app.count("runs").await, 0);
    let labels: Vec<_> = question[0]
        .buttons
        .iter()
        .map(|b| b.label.clone())
        .collect();
    assert!(labels[0].starts_with("draft: "), "{labels:?}");
    assert_eq!(labels[1], "Show the commands");
    let drafted = app.press(&question[0].buttons[0]).await;
    assert!(
        texts(&drafted).contains(DEFAULT_DRAFT),
        "{}",
        texts(&drafted)
    );
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.input.request, "pricing thing for linkedin maybe");
}

async fn a_repeated_request_is_routed_from_the_cache(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.always(Behavior::reply(
        "{\"intent\": \"cost\", \"confidence\": 0.9}",
    ));

    let first = app.say("How much did I spend today?").await;
    let second = app.say("how much did i spend   today").await;

    assert!(
        texts(&first).starts_with("Spend today"),
        "{}",
        texts(&first)
    );
    assert!(
        texts(&second).starts_with("Spend today"),
        "{}",
        texts(&second)
    );
    assert_eq!(app.llm.calls(), 1, "the second routing came from the cache");
}

async fn cost_reports_today_and_the_month_by_flow_and_model(db: Db) {
    let app = TestApp::spawn(db).await;
    app.say("/draft a post").await;

    let report = texts(&app.say("/cost").await);

    assert!(report.starts_with("Spend today ("), "{report}");
    assert!(report.contains("of $2.00, 1 call(s)"), "{report}");
    assert!(report.contains("of $40.00"), "{report}");
    assert!(
        report.contains("By flow this month:\n  draft: $"),
        "{report}"
    );
    assert!(
        report.contains("By model this month:\n  openai/gpt-4o: $"),
        "{report}"
    );
}

async fn when_the_high_estimate_does_not_fit_the_exact_count_decides(db: Db) {
    // A long English prompt: the estimate (a token per two bytes) says about
    // 1,000 tokens, OpenAI's tokenizer about 450. At $0.15 in and $0.60 out
    // per million (50 output tokens), only the exact count fits $0.00015.
    let app = TestApp::spawn_with(db, |s| s.policy.daily_budget_usd = 0.000_15).await;
    let mut long = call(CostLabel::LowCost, Tier::Fast, None);
    long.prompt = "Write a short note to a client about the audit. ".repeat(40);

    let completion = complete(&app, &long).await;

    if cfg!(feature = "exact-tokens") {
        assert!(completion.is_ok(), "{completion:?}");
        assert_eq!(app.llm.calls(), 1);
    } else {
        // Without the tokenizer the bound decides, and refuses before
        // anything is sent.
        assert!(completion.is_err(), "{completion:?}");
        assert_eq!(app.llm.calls(), 0);
    }
}
