//! The Discord adapter against a fake Discord over real HTTP and a real
//! gateway WebSocket: slash commands deferred then answered, buttons that
//! decide once, refusals only their sender sees, an approval started on
//! Telegram decided here, a dropped gateway resumed without losing an
//! event, mentions, long text, 429s.

use std::time::Duration;

use soloist::adapters::discord::{self, DiscordError};
use soloist::app::App;
use soloist::config::{Secret, Settings};
use soloist::domain::{ApprovalRole, ChatKind, ChatRef, Inbound, InboundContent, Origin, Platform};
use soloist::engine::StartRun;
use soloist::frontdoor::Handles;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fake_discord::{self, APP_ID, FakeDiscord, GUILD_ID, Place, TOKEN, User};
use crate::fake_llm::{Behavior, DEFAULT_DRAFT};
use crate::helpers::{Db, TestApp, count};
use crate::on_both_backends;
use crate::telegram::{allow_inserts, refuse_inserts};

on_both_backends!(
    a_slash_draft_is_deferred_then_answered_and_approve_closes_the_offer,
    a_telegram_started_approval_is_decided_on_discord_and_closed_on_both,
    the_owner_is_one_identity_whichever_platform_they_press_on,
    a_press_by_someone_not_allowed_is_refused_privately_and_decides_nothing,
    a_slash_command_from_someone_not_allowed_is_refused_privately_before_any_model,
    an_allowed_user_may_act_under_their_own_name,
    a_double_press_records_one_decision_and_the_second_is_told_privately,
    a_forged_button_is_refused_at_once_and_touches_nothing,
    a_gateway_disconnect_and_resume_loses_no_event,
    server_messages_count_when_they_mention_the_bot_and_dms_always,
    long_and_marked_up_drafts_arrive_escaped_within_2000_characters_with_the_text_attached,
    a_channel_429_holds_the_message_back_and_it_is_sent_once,
    a_global_429_pauses_every_bot_request_until_it_lapses,
    a_rate_limited_acknowledgement_is_retried_within_the_3_seconds,
    slash_commands_are_registered_in_the_guild_when_one_is_set_and_globally_otherwise,
    cost_and_run_commands_answer_through_slash_commands,
    a_refused_token_stops_the_adapter_with_a_sentence_that_does_not_print_it,
    shutdown_stops_the_adapter_cleanly,
    the_outbox_counts_each_discord_message_delivered_once,
    a_slash_command_is_recorded_before_it_is_acknowledged,
    after_a_restart_the_reply_still_fills_the_deferred_response,
    a_public_reply_never_fills_another_users_thinking_response,
    in_a_server_channel_not_listed_nothing_is_done_and_reports_stay_private,
    a_strangers_words_are_not_stored_and_not_answered_in_public,
    a_mention_sent_while_the_session_could_not_resume_is_read_back_from_history_and_answered_once,
    a_mention_seen_live_and_again_in_history_is_answered_once,
);

/// The owner (`owner.discord_user_id`), recorded as `business.owner`.
const OWNER: User = User {
    id: "111000000000000001",
    name: "maya.discord",
};
/// In `discord.allowed_user_ids`.
const HELPER: User = User {
    id: "111000000000000002",
    name: "Sam",
};
const STRANGER: User = User {
    id: "111000000000000003",
    name: "Mallory",
};
const OWNER_NAME: &str = "Maya Okafor";
const DM: &str = "700000000000000001";
const CHANNEL: &str = "700000000000000002";
const OTHER_CHANNEL: &str = "700000000000000003";
/// A server channel not in `discord.allowed_channel_ids`.
const CLOSED_CHANNEL: &str = "700000000000000004";

/// soloist with its Discord adapter connected to a fake Discord.
struct Bot {
    test: TestApp,
    discord: FakeDiscord,
    shutdown: CancellationToken,
    running: Option<JoinHandle<Result<(), DiscordError>>>,
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn connect(settings: &mut Settings, discord: &FakeDiscord) {
    settings.discord.token = Secret::new(TOKEN);
    settings.discord.api_url = discord.api_url.clone();
    settings.discord.allowed_user_ids = vec![HELPER.id.into()];
    settings.discord.allowed_channel_ids = vec![CHANNEL.into(), OTHER_CHANNEL.into()];
    settings.owner.discord_user_id = OWNER.id.into();
}

/// The Discord adapter of `app`, running until `shutdown`.
fn spawn_adapter(app: &App, shutdown: &CancellationToken) -> JoinHandle<Result<(), DiscordError>> {
    tokio::spawn(discord::run(Handles::of(app), shutdown.clone()))
}

impl Bot {
    async fn start(db: Db) -> Bot {
        Bot::start_with(db, |_| {}).await
    }

    async fn start_with(db: Db, adjust: impl FnOnce(&mut Settings)) -> Bot {
        let discord = FakeDiscord::start().await;
        let test = TestApp::spawn_with(db, |settings| {
            connect(settings, &discord);
            adjust(settings);
        })
        .await;
        let shutdown = CancellationToken::new();
        let running = spawn_adapter(&test.app, &shutdown);
        discord
            .wait_for("the gateway session", |w| w.connected().then_some(()))
            .await;
        Bot {
            test,
            discord,
            shutdown,
            running: Some(running),
        }
    }

    /// Stops this process's adapter (work in flight is dropped, as in a
    /// crash) and starts a new one on the same database and fake Discord.
    async fn restart(&mut self, adjust: impl FnOnce(&mut Settings)) -> App {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
        let discord = self.discord.clone();
        let app = self
            .test
            .restart(move |settings| {
                connect(settings, &discord);
                adjust(settings);
            })
            .await;
        self.shutdown = CancellationToken::new();
        self.running = Some(spawn_adapter(&app, &self.shutdown));
        self.discord
            .wait_for("a new gateway session", |w| w.connected().then_some(()))
            .await;
        app
    }

    /// The callback type an interaction was answered with.
    async fn callback_of(&self, id: &str) -> u64 {
        self.discord
            .wait_for("the interaction's callback", |w| {
                w.interactions[id].callback.map(|(kind, _, _)| kind)
            })
            .await
    }

    /// Stops the adapter and returns how it ended.
    async fn stop(&mut self) -> Result<(), DiscordError> {
        self.shutdown.cancel();
        self.running.take().unwrap().await.unwrap()
    }

    /// (decision, decided_by) of every decision, oldest first.
    async fn decisions(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT decision, decided_by FROM decisions ORDER BY id")
            .fetch_all(self.test.app.store.pool())
            .await
            .unwrap()
    }

    /// A channel message whose content contains `text`.
    async fn posted(&self, channel: &str, text: &str) -> fake_discord::Msg {
        self.discord
            .wait_for(&format!("'{text}' in {channel}"), |w| {
                w.in_channel(channel)
                    .into_iter()
                    .find(|m| m.content.contains(text))
            })
            .await
    }

    /// The owner drafts with /draft in `place`; returns the offer message.
    async fn draft(&self, place: Place, channel: &str) -> fake_discord::Msg {
        let id = self.discord.slash(
            OWNER,
            place,
            channel,
            "draft",
            Some("a LinkedIn post announcing the new Website Audit price"),
        );
        self.discord.original_of(&id).await
    }
}

/// Interactions stored as waiting for their answer.
async fn pending_interactions(bot: &Bot) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM pending_interactions")
        .fetch_one(bot.test.app.store.pool())
        .await
        .unwrap()
}

/// Rows in the audit log saying someone was refused.
async fn refusals(bot: &Bot) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'refused'")
        .fetch_one(bot.test.app.store.pool())
        .await
        .unwrap()
}

async fn a_slash_draft_is_deferred_then_answered_and_approve_closes_the_offer(db: Db) {
    let bot = Bot::start(db).await;
    bot.test.llm.then(Behavior::Delayed(
        Duration::from_millis(3500),
        Box::new(Behavior::reply(DEFAULT_DRAFT)),
    ));

    let command = bot.discord.slash(
        OWNER,
        Place::Guild,
        CHANNEL,
        "draft",
        Some("a LinkedIn post announcing the new Website Audit price"),
    );
    let offer = bot.discord.original_of(&command).await;

    let answered = bot.discord.interaction(&command);
    let (kind, flags, at) = answered.callback.expect("a callback");
    assert_eq!((kind, flags), (5, 0), "deferred, visible to the channel");
    assert!(
        at - answered.dispatched_at < Duration::from_secs(3),
        "deferred within Discord's 3 s although the model took 3.5 s"
    );
    assert!(offer.content.contains(DEFAULT_DRAFT), "{}", offer.content);
    let labels: Vec<_> = offer.buttons().iter().map(|b| b["label"].clone()).collect();
    assert_eq!(labels, ["Approve", "Edit", "Reject"]);
    assert_eq!(offer.allowed_mentions["parse"], serde_json::json!([]));

    let press = bot
        .discord
        .press(OWNER, Place::Guild, offer.id, &offer.custom_id("Approve"));
    let closed = bot
        .discord
        .wait_for("the offer closed", |w| {
            let shown = &w.messages[&offer.id];
            (shown.buttons().len() == 1).then(|| shown.clone())
        })
        .await;

    assert_eq!(bot.discord.interaction(&press).callback.unwrap().0, 6);
    let button = &closed.buttons()[0];
    assert_eq!(button["label"], format!("Approved by {OWNER_NAME}"));
    assert_eq!(button["disabled"], true);
    assert_eq!(closed.content, offer.content, "the draft stays readable");
    bot.posted(CHANNEL, "Approved. Saved as artifact").await;
    let decisions = bot.decisions().await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(
        (decisions[0].0.as_str(), decisions[0].1.as_str()),
        ("approve", OWNER_NAME)
    );
}

async fn a_telegram_started_approval_is_decided_on_discord_and_closed_on_both(db: Db) {
    let bot = Bot::start_with(db, |s| s.owner.telegram_user_id = "5550001".into()).await;
    let engine = &bot.test.app.engine;
    let telegram = ChatRef::new(Platform::Telegram, "5550001");
    let run = engine
        .start(StartRun {
            flow: "draft".into(),
            chat: telegram.clone(),
            request: "a post about the Brand Sprint".into(),
            requested_by: OWNER_NAME.into(),
            idempotency_key: "telegram:update:1".into(),
        })
        .await
        .unwrap();
    engine.drive(run).await.unwrap();
    // What the Telegram adapter would do: deliver the offer, note its id.
    let store = &bot.test.app.store;
    let offer_row = store.pending_outbox(Platform::Telegram, 10).await.unwrap();
    assert_eq!(offer_row.len(), 1);
    store
        .mark_delivered(offer_row[0].id, Some("tg-42"))
        .await
        .unwrap();

    let listing = bot.discord.slash(OWNER, Place::Dm, DM, "approvals", None);
    let offer = bot.discord.original_of(&listing).await;
    assert!(offer.content.contains(DEFAULT_DRAFT), "{}", offer.content);
    bot.discord
        .press(OWNER, Place::Dm, offer.id, &offer.custom_id("Approve"));

    bot.discord
        .wait_for("the Discord offer closed", |w| {
            (w.messages[&offer.id].buttons()[0]["disabled"] == true).then_some(())
        })
        .await;
    let decisions = bot.decisions().await;
    assert_eq!(decisions[0].1, OWNER_NAME);
    let telegram_rows = store.pending_outbox(Platform::Telegram, 10).await.unwrap();
    let closed: Vec<_> = telegram_rows
        .iter()
        .filter(|r| {
            r.message
                .approval
                .is_some_and(|a| a.role == ApprovalRole::Closed)
        })
        .collect();
    assert_eq!(closed.len(), 1, "one closing message queued for Telegram");
    assert_eq!(closed[0].message.text, format!("Approved by {OWNER_NAME}."));
    let approval = closed[0].message.approval.unwrap().id;
    assert_eq!(
        store.offer_message_ids(approval, &telegram).await.unwrap(),
        ["tg-42"],
        "the Telegram adapter will edit its own offer"
    );
}

async fn the_owner_is_one_identity_whichever_platform_they_press_on(db: Db) {
    let bot = Bot::start_with(db, |s| s.owner.telegram_user_id = "5550001".into()).await;
    let first = bot.draft(Place::Dm, DM).await;
    let second = bot.draft(Place::Dm, DM).await;

    // The owner decides the first on Discord and the second on Telegram.
    bot.discord
        .press(OWNER, Place::Dm, first.id, &first.custom_id("Reject"));
    bot.posted(DM, "Why reject it?").await;
    let telegram_press = Inbound {
        chat: ChatRef::new(Platform::Telegram, "5550001"),
        update_key: "telegram-callback-1".into(),
        user_id: "5550001".into(),
        user_name: "maya_tg".into(),
        message_id: None,
        content: InboundContent::Button(second.custom_id("Approve").try_into().unwrap()),
        chat_kind: ChatKind::Private,
        origin: Origin::Typed,
    };
    bot.test
        .app
        .controller
        .handle(&telegram_press)
        .await
        .unwrap();

    let by: Vec<String> = sqlx::query_scalar("SELECT decided_by FROM decisions ORDER BY id")
        .fetch_all(bot.test.app.store.pool())
        .await
        .unwrap();
    assert_eq!(by, [OWNER_NAME, OWNER_NAME]);
    bot.discord
        .wait_for("the second offer closed from Telegram", |w| {
            (w.messages[&second.id].buttons()[0]["label"] == format!("Approved by {OWNER_NAME}"))
                .then_some(())
        })
        .await;
}

async fn a_press_by_someone_not_allowed_is_refused_privately_and_decides_nothing(db: Db) {
    let bot = Bot::start(db).await;
    let offer = bot.draft(Place::Guild, CHANNEL).await;

    let press = bot.discord.press(
        STRANGER,
        Place::Guild,
        offer.id,
        &offer.custom_id("Approve"),
    );
    let refusal = bot.discord.follow_up_of(&press).await;

    assert!(refusal.is_ephemeral());
    assert_eq!(refusal.content, "Sorry, this bot works only for its owner.");
    assert_eq!(bot.test.count("decisions").await, 0);
    assert_eq!(refusals(&bot).await, 1);
    assert_eq!(
        bot.test.llm.calls(),
        1,
        "only the owner's draft reached the model"
    );
    let shown = bot.discord.message(offer.id);
    assert_eq!(shown.buttons().len(), 3, "the offer is untouched");
    assert_eq!(
        bot.test.app.store.pending_approvals().await.unwrap().len(),
        1
    );
}

async fn a_slash_command_from_someone_not_allowed_is_refused_privately_before_any_model(db: Db) {
    let bot = Bot::start(db).await;

    let command = bot.discord.slash(
        STRANGER,
        Place::Guild,
        CHANNEL,
        "draft",
        Some("leak the prices"),
    );
    let answer = bot.discord.original_of(&command).await;

    let (kind, flags, _) = bot.discord.interaction(&command).callback.unwrap();
    assert_eq!((kind, flags), (5, 64), "deferred privately");
    assert!(answer.is_ephemeral());
    assert_eq!(answer.content, "Sorry, this bot works only for its owner.");
    assert_eq!(bot.test.llm.calls(), 0);
    assert_eq!(bot.test.count("runs").await, 0);
    assert_eq!(refusals(&bot).await, 1);
}

async fn an_allowed_user_may_act_under_their_own_name(db: Db) {
    let bot = Bot::start(db).await;
    let offer = bot.draft(Place::Guild, CHANNEL).await;

    bot.discord
        .press(HELPER, Place::Guild, offer.id, &offer.custom_id("Approve"));

    bot.posted(CHANNEL, "Approved. Saved").await;
    assert_eq!(bot.decisions().await[0].1, "Sam");
}

async fn a_double_press_records_one_decision_and_the_second_is_told_privately(db: Db) {
    let bot = Bot::start(db).await;
    let offer = bot.draft(Place::Guild, CHANNEL).await;
    let approve = offer.custom_id("Approve");

    bot.discord.press(OWNER, Place::Guild, offer.id, &approve);
    bot.posted(CHANNEL, "Approved. Saved").await;
    let again = bot.discord.press(OWNER, Place::Guild, offer.id, &approve);
    let reply = bot.discord.follow_up_of(&again).await;

    assert!(reply.is_ephemeral());
    assert_eq!(reply.content, "This approval is no longer open.");
    assert_eq!(bot.decisions().await.len(), 1);
    let saved = bot.discord.see(|w| {
        w.in_channel(CHANNEL)
            .iter()
            .filter(|m| m.content.contains("Approved. Saved"))
            .count()
    });
    assert_eq!(saved, 1, "the run went on once");
}

async fn a_forged_button_is_refused_at_once_and_touches_nothing(db: Db) {
    let bot = Bot::start(db).await;
    let offer = bot.draft(Place::Guild, CHANNEL).await;

    let forged = bot.discord.press(
        OWNER,
        Place::Guild,
        offer.id,
        "approve:00000000-0000-0000-0000-000000000000",
    );
    let guessed = bot.discord.press(
        OWNER,
        Place::Guild,
        offer.id,
        "0123456789abcdef0123456789abcdef",
    );

    let answer = bot.discord.original_of(&forged).await;
    assert!(answer.is_ephemeral());
    assert_eq!(answer.content, "This approval is no longer open.");
    let reply = bot.discord.follow_up_of(&guessed).await;
    assert_eq!(reply.content, "This approval is no longer open.");
    assert_eq!(bot.test.count("decisions").await, 0);
    assert_eq!(bot.discord.message(offer.id).buttons().len(), 3);
}

async fn a_gateway_disconnect_and_resume_loses_no_event(db: Db) {
    let bot = Bot::start(db).await;
    bot.discord.post(OWNER, Place::Dm, DM, "/runs", false);
    bot.posted(DM, "No runs yet").await;

    bot.discord.drop_connection_then(|discord| {
        discord.post(OWNER, Place::Dm, DM, "/help", false);
    });

    bot.posted(DM, "I run your business workflows").await;
    let (identifies, resumes, replayed) = bot
        .discord
        .see(|w| (w.identifies(), w.resumes(), w.replayed()));
    assert_eq!((identifies, resumes), (1, 1), "resumed, not a new session");
    assert!(replayed >= 1, "the missed event came by replay");
    let answers = |text: &'static str| {
        bot.discord.see(move |w| {
            w.in_channel(DM)
                .iter()
                .filter(|m| m.content.contains(text))
                .count()
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        answers("No runs yet"),
        1,
        "the earlier event was not handled twice"
    );
    assert_eq!(answers("I run your business workflows"), 1);
    assert!(
        bot.discord.see(|w| w.heartbeats()) >= 1,
        "heartbeats acknowledged"
    );
}

async fn server_messages_count_when_they_mention_the_bot_and_dms_always(db: Db) {
    let bot = Bot::start(db).await;

    bot.discord
        .post(OWNER, Place::Guild, CHANNEL, "/help not for the bot", false);
    bot.discord
        .post(OWNER, Place::Guild, OTHER_CHANNEL, "/help", true);
    bot.discord.post(OWNER, Place::Dm, DM, "/runs", false);
    let itself = User {
        id: fake_discord::BOT_USER_ID,
        name: "soloist",
    };
    bot.discord.post(itself, Place::Dm, DM, "/help", false);

    bot.posted(OTHER_CHANNEL, "I run your business workflows")
        .await;
    bot.posted(DM, "No runs yet").await;
    assert!(bot.discord.see(|w| w.in_channel(CHANNEL).is_empty()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let in_dm = bot.discord.see(|w| w.in_channel(DM));
    assert_eq!(
        in_dm.len(),
        1,
        "the bot's own message is not answered: {in_dm:#?}"
    );
    let intents = bot.discord.see(|w| w.intents()).unwrap();
    assert_eq!(
        intents,
        (1 << 9) | (1 << 12),
        "server and DM messages only; no privileged intent"
    );
}

async fn long_and_marked_up_drafts_arrive_escaped_within_2000_characters_with_the_text_attached(
    db: Db,
) {
    let bot = Bot::start(db).await;
    let long = format!(
        "**Big news** @everyone <@{}>\n{}",
        OWNER.id,
        "a_b ".repeat(1200)
    );
    bot.test.llm.then(Behavior::reply(&long));

    let offer = bot.draft(Place::Dm, DM).await;

    assert!(offer.content.encode_utf16().count() <= 2000);
    assert!(
        offer
            .content
            .contains("\\*\\*Big news\\*\\* \\@everyone \\<\\@"),
        "{}",
        &offer.content[..200]
    );
    assert!(
        offer
            .content
            .ends_with("(the full text is attached as message.txt)")
    );
    let (name, bytes) = &offer.files[0];
    assert_eq!(name, "message.txt");
    assert!(String::from_utf8_lossy(bytes).contains(long.trim()));
    assert_eq!(
        offer.buttons().len(),
        3,
        "the buttons ride on the same message"
    );
}

async fn a_channel_429_holds_the_message_back_and_it_is_sent_once(db: Db) {
    let bot = Bot::start(db).await;
    bot.discord.rate_limit_next("/messages", 0.6, false);

    bot.discord.post(OWNER, Place::Dm, DM, "/runs", false);
    let reply = bot.posted(DM, "No runs yet").await;

    let sends = bot
        .discord
        .calls("POST", &format!("/channels/{DM}/messages"));
    assert_eq!(sends.len(), 2, "one refused, one accepted");
    assert_eq!((sends[0].status, sends[1].status), (429, 200));
    assert!(sends[1].at - sends[0].at >= Duration::from_millis(600));
    assert_eq!(bot.discord.see(|w| w.in_channel(DM).len()), 1);
    assert_eq!(reply.content, "No runs yet. Start one with /draft …");
}

async fn a_global_429_pauses_every_bot_request_until_it_lapses(db: Db) {
    let bot = Bot::start(db).await;
    bot.discord.rate_limit_next("/messages", 1.0, true);

    bot.discord.post(OWNER, Place::Dm, DM, "/runs", false);
    bot.discord
        .wait_for("the 429", |w| {
            w.calls.iter().any(|c| c.status == 429).then_some(())
        })
        .await;
    bot.discord
        .post(OWNER, Place::Guild, OTHER_CHANNEL, "/help", true);
    bot.posted(DM, "No runs yet").await;
    bot.posted(OTHER_CHANNEL, "I run your business").await;

    let calls = bot.discord.see(|w| w.calls.clone());
    let limited = calls.iter().find(|c| c.status == 429).unwrap();
    let sent: Vec<_> = calls
        .iter()
        .filter(|c| c.status == 200 && c.route.contains("/messages") && c.method == "POST")
        .collect();
    assert!(
        sent.len() >= 2,
        "both replies were posted after the 429: {sent:#?}"
    );
    for call in sent {
        assert!(
            call.at - limited.at >= Duration::from_millis(950),
            "{} went {:?} after a global 429",
            call.route,
            call.at - limited.at
        );
    }
}

async fn a_rate_limited_acknowledgement_is_retried_within_the_3_seconds(db: Db) {
    let bot = Bot::start(db).await;
    bot.discord.rate_limit_next("/callback", 0.4, false);

    let command = bot.discord.slash(OWNER, Place::Dm, DM, "help", None);
    let answer = bot.discord.original_of(&command).await;

    let answered = bot.discord.interaction(&command);
    let (kind, _, at) = answered.callback.unwrap();
    assert_eq!(kind, 5);
    assert!(at - answered.dispatched_at >= Duration::from_millis(400));
    assert!(at - answered.dispatched_at < Duration::from_secs(3));
    assert!(answer.content.contains("I run your business workflows"));
}

async fn slash_commands_are_registered_in_the_guild_when_one_is_set_and_globally_otherwise(db: Db) {
    let global = Bot::start(db).await;
    let in_guild = Bot::start_with(db, |s| s.discord.guild_id = GUILD_ID.into()).await;

    let (scope, commands) = global.discord.see(|w| w.commands[0].clone());
    assert_eq!(scope, None);
    let names: Vec<_> = commands
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "draft",
            "offer",
            "runs",
            "run",
            "post",
            "retract",
            "result",
            "approvals",
            "retry",
            "cost",
            "policy",
            "digest",
            "schedules",
            "schedule",
            "lead",
            "leads",
            "autonomy",
            "remember",
            "memory",
            "forget",
            "sources",
            "forget_person",
            "help"
        ]
    );
    let (scope, _) = in_guild.discord.see(|w| w.commands[0].clone());
    assert_eq!(scope.as_deref(), Some(GUILD_ID));
}

async fn cost_and_run_commands_answer_through_slash_commands(db: Db) {
    let bot = Bot::start(db).await;
    bot.draft(Place::Dm, DM).await;

    let cost = bot.discord.slash(OWNER, Place::Dm, DM, "cost", None);
    let answer = bot.discord.original_of(&cost).await;

    assert!(
        answer.content.starts_with("Spend today") && answer.content.contains("1 call(s)"),
        "{}",
        answer.content
    );
    let run = bot.test.app.store.recent_runs(1).await.unwrap().remove(0);
    let shown = bot
        .discord
        .slash(OWNER, Place::Dm, DM, "run", Some(&run.id.short()));
    let answer = bot.discord.original_of(&shown).await;
    assert!(
        answer.content.contains("waiting\\_approval"),
        "{}",
        answer.content
    );
}

async fn a_refused_token_stops_the_adapter_with_a_sentence_that_does_not_print_it(db: Db) {
    let discord = FakeDiscord::start().await;
    let test = TestApp::spawn_with(db, |s| {
        connect(s, &discord);
        s.discord.token = Secret::new("wrong-token-value");
    })
    .await;

    let error = discord::run(Handles::of(&test.app), CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("DISCORD_TOKEN"), "{error}");
    assert!(!error.contains("wrong-token-value"));
    assert_eq!(discord.see(|w| w.identifies()), 0);
    let _ = APP_ID;
}

async fn shutdown_stops_the_adapter_cleanly(db: Db) {
    let mut bot = Bot::start(db).await;
    let store = bot.test.app.store.clone();
    let discord = bot.discord.clone();

    let stopped = tokio::time::timeout(Duration::from_secs(5), bot.stop()).await;

    assert!(
        matches!(stopped, Ok(Ok(()))),
        "stopped in time, without an error"
    );
    discord
        .wait_for("the gateway connection closed", |w| {
            (!w.connected()).then_some(())
        })
        .await;
    store
        .enqueue(
            &ChatRef::new(Platform::Discord, DM),
            &soloist::domain::Outbound::text("after shutdown"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        discord.see(|w| w.in_channel(DM).is_empty()),
        "nothing is delivered after shutdown"
    );
}

#[test]
fn every_event_the_fake_sends_parses_as_serenity_reads_it() {
    for (kind, payload) in fake_discord::sample_events() {
        let parsed = match kind {
            "INTERACTION_CREATE" => {
                serde_json::from_value::<serenity::all::Interaction>(payload.clone()).map(drop)
            }
            _ => serde_json::from_value::<serenity::all::Message>(payload.clone()).map(drop),
        };
        assert!(parsed.is_ok(), "{kind}: {parsed:?}\n{payload:#}");
    }
}

async fn the_outbox_counts_each_discord_message_delivered_once(db: Db) {
    let bot = Bot::start(db).await;
    bot.draft(Place::Dm, DM).await;
    bot.discord.post(OWNER, Place::Dm, DM, "/runs", false);
    bot.posted(DM, "Recent runs").await;

    let store = &bot.test.app.store;
    // The fake shows a message as soon as it is posted; the outbox marks
    // it delivered when the answer comes back, a moment later.
    let mut pending = Vec::new();
    for _ in 0..100 {
        pending = store.pending_outbox(Platform::Discord, 10).await.unwrap();
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pending.is_empty(), "{pending:#?}");
    let delivered: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE platform = 'discord' AND status = 'delivered' AND platform_message_id IS NOT NULL",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(delivered, 2);
    assert_eq!(count(store, "outbox").await, 2);
}

async fn a_slash_command_is_recorded_before_it_is_acknowledged(db: Db) {
    let bot = Bot::start(db).await;
    let store = bot.test.app.store.clone();
    refuse_inserts(&store, db, "platform_updates").await;

    let unrecorded = bot.discord.slash(OWNER, Place::Dm, DM, "help", None);
    let kind = bot.callback_of(&unrecorded).await;
    allow_inserts(&store, db, "platform_updates").await;
    let recorded = bot.discord.slash(OWNER, Place::Dm, DM, "help", None);
    let answer = bot.discord.original_of(&recorded).await;

    assert_eq!(
        kind, 4,
        "not deferred: what could not be recorded is answered at once"
    );
    assert!(bot.discord.interaction(&unrecorded).original.is_some());
    assert_eq!(
        bot.callback_of(&recorded).await,
        5,
        "deferred once recorded"
    );
    assert!(answer.content.contains("I run your business workflows"));
    assert_eq!(count(&store, "platform_updates").await, 1);
}

async fn after_a_restart_the_reply_still_fills_the_deferred_response(db: Db) {
    let mut bot = Bot::start_with(db, |s| s.engine.lease_secs = 1.0).await;
    bot.test.llm.then(Behavior::Hang(Duration::from_secs(30)));
    let command = bot.discord.slash(
        OWNER,
        Place::Dm,
        DM,
        "draft",
        Some("a LinkedIn post announcing the new Website Audit price"),
    );
    assert_eq!(bot.callback_of(&command).await, 5);
    bot.discord
        .wait_for("the model call", |_| {
            (bot.test.llm.calls() == 1).then_some(())
        })
        .await;
    assert_eq!(pending_interactions(&bot).await, 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let app = bot.restart(|s| s.engine.lease_secs = 1.0).await;
    // What `soloist run`'s worker does at start: resume the lapsed run.
    app.engine.resume_runnable().await.unwrap();
    let answer = bot.discord.original_of(&command).await;

    assert!(answer.content.contains(DEFAULT_DRAFT), "{}", answer.content);
    assert_eq!(answer.buttons().len(), 3, "the offer fills the deferral");
    assert!(
        bot.discord.see(|w| w.in_channel(DM).len()) <= 1,
        "not posted again as a new message"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pending_interactions(&bot).await, 0);
}

async fn a_public_reply_never_fills_another_users_thinking_response(db: Db) {
    let bot = Bot::start(db).await;
    bot.test.llm.then(Behavior::Hang(Duration::from_secs(30)));
    let helpers_draft =
        bot.discord
            .slash(HELPER, Place::Guild, CHANNEL, "draft", Some("a slow post"));
    assert_eq!(bot.callback_of(&helpers_draft).await, 5);

    bot.discord
        .post(OWNER, Place::Guild, CHANNEL, "/help", true);
    let help = bot.posted(CHANNEL, "I run your business workflows").await;

    let helpers = bot.discord.interaction(&helpers_draft);
    assert!(
        helpers.original.is_none_or(|id| id != help.id),
        "the owner's answer did not fill the helper's deferral"
    );
    let original_content = helpers
        .original
        .map(|id| bot.discord.message(id).content)
        .unwrap_or_default();
    assert!(
        !original_content.contains("I run your business"),
        "{original_content}"
    );
}

async fn in_a_server_channel_not_listed_nothing_is_done_and_reports_stay_private(db: Db) {
    let bot = Bot::start(db).await;
    let dm_only = Bot::start_with(db, |s| s.discord.allowed_channel_ids.clear()).await;

    let closed = bot.discord.slash(
        OWNER,
        Place::Guild,
        CLOSED_CHANNEL,
        "draft",
        Some("a post for the server"),
    );
    let refusal = bot.discord.original_of(&closed).await;
    let cost = bot
        .discord
        .slash(OWNER, Place::Guild, CHANNEL, "cost", None);
    let private = bot.discord.follow_up_of(&cost).await;

    assert!(refusal.is_ephemeral());
    assert!(
        refusal.content.contains("I work only in private chats"),
        "{}",
        refusal.content
    );
    assert_eq!(bot.test.llm.calls(), 0);
    assert!(private.is_ephemeral());
    assert!(
        private.content.contains("only in a private chat"),
        "{}",
        private.content
    );
    assert!(!private.content.contains("Spend today"));
    let contexts = |bot: &Bot| bot.discord.see(|w| w.commands[0].1[0]["contexts"].clone());
    assert_eq!(contexts(&bot), serde_json::json!([0, 1]));
    assert_eq!(
        contexts(&dm_only),
        serde_json::json!([1]),
        "with no channel listed, commands are offered in DMs only"
    );
}

async fn a_strangers_words_are_not_stored_and_not_answered_in_public(db: Db) {
    let bot = Bot::start(db).await;
    bot.discord.post(
        STRANGER,
        Place::Guild,
        CHANNEL,
        "my card is 4111 1111 1111 1111",
        true,
    );
    for _ in 0..100 {
        if refusals(&bot).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(refusals(&bot).await, 1, "audited");
    assert!(
        bot.discord.see(|w| w.in_channel(CHANNEL).is_empty()),
        "no refusal posted in front of the server"
    );
    let pool = bot.test.app.store.pool();
    for (table, column) in [("platform_updates", "payload"), ("messages", "text")] {
        let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} LIKE '%4111%'"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(found, 0, "the stranger's words are in {table}");
    }
}

/// How many of the bot's messages in `channel` answer `/NAME` (the bot
/// answers an unknown command `/NAME` with "… the command /NAME. …").
fn answers_to(bot: &Bot, channel: &str, name: &str) -> usize {
    let asked = format!("/{name}.");
    bot.discord.see(|w| {
        w.in_channel(channel)
            .iter()
            .filter(|m| m.content.contains(&asked))
            .count()
    })
}

/// The owner mentions the bot with `/NAME` in `channel`, live, and waits
/// for the answer.
async fn mention_answered(bot: &Bot, channel: &str, name: &str) -> u64 {
    let id = bot
        .discord
        .post(OWNER, Place::Guild, channel, &format!("/{name}"), true);
    bot.posted(channel, &format!("/{name}.")).await;
    id
}

async fn a_mention_sent_while_the_session_could_not_resume_is_read_back_from_history_and_answered_once(
    db: Db,
) {
    let bot = Bot::start(db).await;
    // The bot was active in both allowed channels: where history is read
    // back from.
    mention_answered(&bot, CHANNEL, "seen1").await;
    mention_answered(&bot, OTHER_CHANNEL, "other1").await;
    // The other channel's history is refused (the bot lost access to it).
    bot.discord.refuse_history(OTHER_CHANNEL, 403);

    // Two mentions reach the channels but no session; the session is lost
    // and cannot be resumed, so the bot identifies anew.
    let missed = bot
        .discord
        .post_unseen(OWNER, Place::Guild, CHANNEL, "/missed2", true);
    bot.discord
        .post_unseen(OWNER, Place::Guild, OTHER_CHANNEL, "/other2", true);
    bot.discord.drop_connection_and_session();
    bot.discord
        .wait_for("a new session", |w| (w.identifies() == 2).then_some(()))
        .await;

    bot.posted(CHANNEL, "/missed2.").await;
    // The gateway keeps working after the refused channel.
    mention_answered(&bot, CHANNEL, "live3").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for name in ["seen1", "missed2", "live3"] {
        assert_eq!(answers_to(&bot, CHANNEL, name), 1, "/{name}");
    }
    assert_eq!(answers_to(&bot, OTHER_CHANNEL, "other1"), 1);
    assert_eq!(
        answers_to(&bot, OTHER_CHANNEL, "other2"),
        0,
        "a refused channel is skipped"
    );
    assert_eq!(bot.discord.see(|w| w.resumes()), 0);
    // One page, read from the last update seen in the channel.
    let reads = bot.discord.see(|w| w.history_reads.clone());
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0].0, CHANNEL);
    assert!(reads[0].1.contains(&missed), "{reads:?}");
    let history_calls = bot.discord.calls("GET", "/messages");
    assert_eq!(
        history_calls.len(),
        2,
        "one read per channel: {history_calls:?}"
    );
    assert!(bot.running.as_ref().is_some_and(|r| !r.is_finished()));
}

async fn a_mention_seen_live_and_again_in_history_is_answered_once(db: Db) {
    let bot = Bot::start(db).await;
    mention_answered(&bot, CHANNEL, "seen1").await;
    // History is answered late, so a mention sent live after the new
    // session began is in it too.
    bot.discord.slow_history(Duration::from_millis(1500));
    bot.discord
        .post_unseen(OWNER, Place::Guild, CHANNEL, "/missed2", true);
    bot.discord.drop_connection_and_session();
    bot.discord
        .wait_for("a new session", |w| {
            (w.identifies() == 2 && w.connected()).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let both_ways = mention_answered(&bot, CHANNEL, "live3").await;

    bot.posted(CHANNEL, "/missed2.").await;
    let reads = bot
        .discord
        .wait_for("the history read", |w| {
            (!w.history_reads.is_empty()).then(|| w.history_reads.clone())
        })
        .await;
    assert!(
        reads[0].1.contains(&both_ways),
        "the live mention is in the page read: {reads:?}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    for name in ["seen1", "missed2", "live3"] {
        assert_eq!(answers_to(&bot, CHANNEL, name), 1, "/{name}");
    }
    let recorded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM platform_updates WHERE platform = 'discord' AND update_id = $1",
    )
    .bind(both_ways as i64)
    .fetch_one(bot.test.app.store.pool())
    .await
    .unwrap();
    assert_eq!(recorded, 1);
}
