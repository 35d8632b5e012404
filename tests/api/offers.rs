//! Productized offers end to end (issue 13): `/offer` → the key-variable
//! review card → Confirm → scope and cover note by the (fake) model → the
//! proposal priced from `[[offers]]` with its PDF on the approval message
//! (console, Telegram `sendDocument`, Discord `files[0]`) → Approve.

use std::time::Duration;

use soloist::app::App;
use soloist::config::{Secret, Settings};
use soloist::domain::{AttachmentBody, InboundContent, Outbound, RunStatus};
use soloist::runtime::{self, platform_services};
use tokio_util::sync::CancellationToken;

use base64::Engine as _;

use crate::email::{point_email_at, start_email};
use crate::fake_discord::{FakeDiscord, Place, TOKEN, User};
use crate::fake_llm::{Behavior, FakeLlm};
use crate::fake_smtp::FakeSmtp;
use crate::fake_telegram::FakeTelegram;
use crate::helpers::{Db, TestApp, button, texts};
use crate::on_both_backends;

on_both_backends!(
    an_offer_is_priced_from_the_settings_whatever_price_the_model_wrote,
    a_discount_above_the_cap_is_refused_with_a_sentence_and_nothing_is_made,
    a_discount_button_above_a_lowered_cap_is_refused_and_one_within_it_reprices,
    an_unknown_offer_is_answered_with_the_configured_offers,
    the_proposal_pdf_reaches_telegram_as_a_document_before_the_approval,
    the_proposal_pdf_reaches_discord_as_a_message_file,
    an_approved_proposal_reaches_the_client_by_email_with_its_pdf_and_only_after_approve,
    without_an_address_the_leads_email_is_used_and_a_rejection_sends_nothing,
);

const REQUEST: &str =
    "/offer Forno Velho, Brand Sprint, start in January, email=ana@fornovelho.example";
/// The scope as a model might write it, with a price it was told not to state.
const SCOPE_WITH_WRONG_PRICE: &str = "- A half-day positioning workshop\n- Logo and wordmark\n- A one-page brand guide, all for EUR 3,900";
const SCOPE: &str =
    "- A half-day positioning workshop\n- Logo and wordmark\n- A one-page brand guide";
const COVER: &str =
    "Forno Velho bakes for three neighbourhoods; the brand should say so at a glance.";

fn script(llm: &FakeLlm, scope: &str) {
    llm.then(Behavior::reply(scope))
        .then(Behavior::reply(COVER));
}

/// The PDF an approval message carries, read from the store.
async fn pdf_of(app: &App, message: &Outbound) -> Vec<u8> {
    let attachment = message.attachment.clone().expect("an attachment");
    let AttachmentBody::Blob(id) = &attachment.body else {
        panic!("the PDF is stored once, not inline in the outbox row");
    };
    assert_eq!(attachment.content_type, "application/pdf");
    app.store.blob(id).await.unwrap().expect("the stored PDF")
}

async fn an_offer_is_priced_from_the_settings_whatever_price_the_model_wrote(db: Db) {
    let app = TestApp::spawn(db).await;
    script(&app.llm, SCOPE_WITH_WRONG_PRICE);

    let card = app.say(REQUEST).await;
    let shown = texts(&card);
    assert!(
        shown.contains("Offer for Forno Velho: Brand Sprint"),
        "{shown}"
    );
    assert!(shown.contains("Price: EUR 4,800"), "{shown}");
    assert!(shown.contains("deposit of EUR 2,400"), "{shown}");
    assert!(shown.contains("Start: Monday 4 January 2027"), "{shown}");
    assert_eq!(app.llm.calls(), 0, "no model call before Confirm");

    let replies = app.press(&button(&card, "Confirm")).await;

    let offer = replies
        .iter()
        .find(|m| m.buttons.iter().any(|b| b.label == "Approve"))
        .unwrap_or_else(|| panic!("an approval offer in {}", texts(&replies)));
    assert!(
        offer.text.contains("- Brand Sprint: EUR 4,800"),
        "{}",
        offer.text
    );
    assert!(
        offer.text.contains("Deposit (50%): EUR 2,400"),
        "{}",
        offer.text
    );
    assert!(
        offer.text.contains(
            "⚠ Check before approving: the scope states EUR 3,900, which is not this offer's price (Brand Sprint: EUR 4,800; deposit EUR 2,400)."
        ),
        "{}",
        offer.text
    );
    let pdf = pdf_of(&app.app, offer).await;
    assert!(pdf.starts_with(b"%PDF-"));
    let name = &offer.attachment.as_ref().unwrap().file_name;
    assert_eq!(name, "proposal-forno-velho-brand-sprint.pdf");

    let approved = app.press(&button(&replies, "Approve")).await;
    assert!(
        texts(&approved).contains("Approved."),
        "{}",
        texts(&approved)
    );
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(
        (run.flow.as_str(), run.status),
        ("offer", RunStatus::Completed)
    );
    let state = app.app.engine.state(run.id).await.unwrap();
    assert_eq!(state.outputs["terms"]["quote"]["price_eur"], 4800);
    assert_eq!(state.outputs["review"]["decision"], "approved");
    // The decision log: the approved proposal is an artifact and a decision.
    assert_eq!(app.count("decisions").await, 1);
    assert_eq!(app.count("artifacts").await, 1);
}

async fn a_discount_above_the_cap_is_refused_with_a_sentence_and_nothing_is_made(db: Db) {
    let app = TestApp::spawn(db).await;

    let reply = app
        .say("/offer Forno Velho, Brand Sprint, discount=15%")
        .await;

    assert_eq!(
        texts(&reply),
        "A 15% discount is above the 10% cap (policy.max_discount), so it is refused; the offer keeps its price. Ask for 10% or less."
    );
    let drafts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offer_drafts")
        .fetch_one(app.app.store.pool())
        .await
        .unwrap();
    assert_eq!((drafts, app.count("runs").await), (0, 0));
    assert_eq!(app.llm.calls(), 0);
}

async fn a_discount_button_above_a_lowered_cap_is_refused_and_one_within_it_reprices(db: Db) {
    let app = TestApp::spawn(db).await;
    let card = app.say(REQUEST).await;
    let ten = button(&card, "Discount −10%");
    let five = button(&card, "Discount −5%");

    // The settings change (max_discount 5) while the card is on screen.
    let lowered = app
        .restart(|settings| settings.policy.guard.max_discount = 5)
        .await;
    let press = |token: soloist::domain::ButtonToken| {
        let inbound = app.inbound(InboundContent::Button(token));
        let controller = lowered.controller.clone();
        async move { controller.handle(&inbound).await.unwrap() }
    };
    press(ten.token).await;
    let refused = crate::helpers::drain(&lowered.store).await;
    assert!(
        texts(&refused).contains("A 10% discount is above the 5% cap"),
        "{}",
        texts(&refused)
    );
    press(five.token).await;
    let repriced = crate::helpers::drain(&lowered.store).await;

    assert!(
        texts(&repriced).contains("Price: EUR 4,560 (EUR 4,800 less 5%)"),
        "{}",
        texts(&repriced)
    );
    assert!(texts(&repriced).contains("deposit of EUR 2,280"));
}

async fn an_unknown_offer_is_answered_with_the_configured_offers(db: Db) {
    let app = TestApp::spawn(db).await;

    let reply = app.say("/offer Forno Velho, Logo Blitz").await;

    assert_eq!(
        texts(&reply),
        "There is no offer called 'Logo Blitz'. The offers are: Brand Sprint, Website Audit, Design Retainer."
    );
}

const TG_OWNER: i64 = 111;

async fn the_proposal_pdf_reaches_telegram_as_a_document_before_the_approval(db: Db) {
    let tg = FakeTelegram::start().await;
    let fake = tg.clone();
    let test = TestApp::spawn_with(db, move |settings: &mut Settings| {
        settings.telegram.token = Secret::new(fake.token.clone());
        settings.telegram.api_url = fake.api_url.clone();
        settings.telegram.allowed_user_ids = vec![TG_OWNER.to_string()];
        settings.telegram.poll_timeout_secs = 1;
        settings.telegram.rate_limits = false;
    })
    .await;
    script(&test.llm, SCOPE);
    let shutdown = CancellationToken::new();
    let services = platform_services(&test.app, &shutdown);
    let running = tokio::spawn(runtime::run(test.app.clone(), services, shutdown.clone()));

    tg.user_says(TG_OWNER, REQUEST);
    let card = tg
        .wait_for(10, "the review card", |s| {
            s.sent_to(TG_OWNER)
                .into_iter()
                .find(|m| m.button("Confirm").is_some())
        })
        .await;
    tg.press(TG_OWNER, &card, &card.button("Confirm").unwrap());
    let offer = tg
        .wait_for(20, "the approval offer", |s| {
            s.sent_to(TG_OWNER)
                .into_iter()
                .find(|m| m.button("Approve").is_some())
        })
        .await;

    let sent = tg.inspect(|s| s.sent_to(TG_OWNER));
    let at = sent
        .iter()
        .position(|m| m.message_id == offer.message_id)
        .unwrap();
    let (name, bytes) = sent[at - 1]
        .document
        .clone()
        .expect("the PDF just before the approval text");
    assert_eq!(name, "proposal-forno-velho-brand-sprint.pdf");
    assert!(bytes.starts_with(b"%PDF-"));
    assert!(offer.visible().contains("Brand Sprint: EUR 4,800"));

    tg.press(TG_OWNER, &offer, &offer.button("Approve").unwrap());
    tg.wait_for(10, "the offer closed", |s| {
        s.sent_to(TG_OWNER)
            .into_iter()
            .find(|m| m.message_id == offer.message_id && m.keyboard.is_none())
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

const DC_OWNER: User = User {
    id: "111000000000000001",
    name: "maya.discord",
};
const DM: &str = "700000000000000001";

async fn the_proposal_pdf_reaches_discord_as_a_message_file(db: Db) {
    let discord = FakeDiscord::start().await;
    let api = discord.api_url.clone();
    let test = TestApp::spawn_with(db, move |settings: &mut Settings| {
        settings.discord.token = Secret::new(TOKEN);
        settings.discord.api_url = api;
        settings.owner.discord_user_id = DC_OWNER.id.into();
    })
    .await;
    script(&test.llm, SCOPE);
    let shutdown = CancellationToken::new();
    let adapter = tokio::spawn(soloist::adapters::discord::run(
        soloist::frontdoor::Handles::of(&test.app),
        shutdown.clone(),
    ));
    discord
        .wait_for("the gateway session", |w| w.connected().then_some(()))
        .await;

    discord.post(DC_OWNER, Place::Dm, DM, REQUEST, false);
    let card = discord
        .wait_for("the review card", |w| {
            w.in_channel(DM)
                .into_iter()
                .find(|m| m.buttons().iter().any(|b| b["label"] == "Confirm"))
        })
        .await;
    discord.press(DC_OWNER, Place::Dm, card.id, &card.custom_id("Confirm"));
    let offer = discord
        .wait_for("the approval offer", |w| {
            w.in_channel(DM)
                .into_iter()
                .find(|m| m.buttons().iter().any(|b| b["label"] == "Approve"))
        })
        .await;

    let (name, bytes) = offer
        .files
        .iter()
        .find(|(name, _)| name.ends_with(".pdf"))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "a PDF among {:?}",
                offer.files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        });
    assert_eq!(name, "proposal-forno-velho-brand-sprint.pdf");
    assert!(bytes.starts_with(b"%PDF-"));
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), adapter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_writes_the_proposal_pdf_under_the_home_and_prints_its_path() {
    let llm = FakeLlm::start().await;
    script(&llm, SCOPE);
    let home = tempfile::tempdir().unwrap();
    let url = llm.base_url.clone();
    let path = home.path().to_path_buf();
    // The card's buttons: −5%, −10%, three start dates, Confirm (6), Cancel.
    let input = "/offer Forno Velho, Brand Sprint, start 2031-03-03\n6\n";

    let (stdout, stderr, ok) =
        tokio::task::spawn_blocking(move || crate::console::chat(&path, Some(&url), input))
            .await
            .unwrap();

    assert!(ok, "{stderr}");
    assert!(stdout.contains("[6] Confirm  [7] Cancel"), "{stdout}");
    let written = home
        .path()
        .canonicalize()
        .unwrap()
        .join("files/proposal-forno-velho-brand-sprint.pdf");
    assert!(
        stdout.contains(&format!("[file: {}]", written.display())),
        "{stdout}"
    );
    assert!(std::fs::read(&written).unwrap().starts_with(b"%PDF-"));
}

async fn an_approved_proposal_reaches_the_client_by_email_with_its_pdf_and_only_after_approve(
    db: Db,
) {
    let smtp = FakeSmtp::start().await;
    let app = TestApp::spawn_with(db, |s| point_email_at(s, &smtp)).await;
    script(&app.llm, SCOPE);
    let shutdown = start_email(&app);
    let card = app.say(REQUEST).await;
    let offer = app.press(&button(&card, "Confirm")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(smtp.received().await.is_empty(), "nothing before Approve");

    let approved = app.press(&button(&offer, "Approve")).await;

    assert!(
        texts(&approved).contains(
            "E-mailed to ana@fornovelho.example with proposal-forno-velho-brand-sprint.pdf attached"
        ),
        "{}",
        texts(&approved)
    );
    let received = smtp.wait_for(1, 10).await;
    shutdown.cancel();
    let mail = &received[0];
    assert_eq!(mail.to, ["ana@fornovelho.example"]);
    assert!(
        mail.data
            .contains("Subject: Proposal: Brand Sprint for Forno Velho")
    );
    // Long header lines are folded; read them unfolded.
    let headers = mail.data.replace("\r\n ", " ").replace("\r\n\t", " ");
    assert!(
        headers.contains("proposal-forno-velho-brand-sprint.pdf")
            && headers.contains("application/pdf"),
        "{}",
        &mail.data[..mail.data.len().min(3000)]
    );
    // The attachment is the PDF the approval carried (base64 in the mail).
    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    let state = app.app.engine.state(run.id).await.unwrap();
    let blob = state.outputs["proposal"]["file"]["blob"].as_str().unwrap();
    let pdf = app.app.store.blob(blob).await.unwrap().unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let body: String = mail.data.split("\r\n").collect();
    assert!(body.contains(&encoded), "the PDF's bytes are in the mail");
    assert_eq!(run.status, RunStatus::Completed);
}

async fn without_an_address_the_leads_email_is_used_and_a_rejection_sends_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    script(&app.llm, SCOPE);
    sqlx::query(
        "INSERT INTO leads (external_id, source, name, company, email, message, created_at, updated_at)
         VALUES ('l-1', 'hook', 'Ana Lopes', 'Forno Velho', 'ana@fornovelho.example', 'We need a brand.', 1, 1)",
    )
    .execute(app.app.store.pool())
    .await
    .unwrap();

    let card = app.say("/offer forno velho, Brand Sprint").await;
    assert!(
        texts(&card).contains("E-mail to: ana@fornovelho.example"),
        "{}",
        texts(&card)
    );
    let offer = app.press(&button(&card, "Confirm")).await;
    app.press(&button(&offer, "Reject")).await;
    app.say("Too early, they have no budget yet.").await;

    let run = app.app.store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Completed);
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM email_keys")
        .fetch_one(app.app.store.pool())
        .await
        .unwrap();
    assert_eq!(keys, 0, "a rejected proposal is never e-mailed");
}
