//! `cargo bench --bench telegram`: the Telegram pipeline against the fake
//! Bot API (`tests/api/fake_telegram.rs`) on SQLite and PostgreSQL, with
//! the fake model (zero latency; `/help` needs no model call anyway).
//!
//! 1. Capacity with the outbox's rate limits lifted (`rate_limits =
//!    false`): a burst of updates from 200 chats, from injection into the
//!    fake to every reply handed to it; updates per second.
//! 2. Added latency: one update at a time, from injection to the reply
//!    reaching the fake (long-poll wake-up, record, controller, outbox,
//!    sendMessage); p50 and p99.
//!
//! On SQLite both run with durable commits (flushed in groups). On
//! PostgreSQL they run twice: with durable commits (the deployment default:
//! each commit on the way waits for the disk), and with PostgreSQL's
//! `synchronous_commit = off` for the bench database, which leaves
//! soloist's own time (and PostgreSQL's CPU) without the disk's.
//! 3. Telegram's pace (limits on, the default): one reply to each of 200
//!    chats against a fake that answers 429 above 30 messages a second;
//!    drain time, 429s seen, messages lost or doubled.
//!
//! PostgreSQL's cases need `SOLOIST_TEST_PG_URL` (see
//! `SOLOIST_TEST_SETUP_ONLY=1 scripts/test.sh`); without it they are skipped.

mod common;
#[allow(dead_code)]
#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/fake_telegram.rs"]
mod fake_telegram;
#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;
#[path = "common/in_process_telegram.rs"]
mod in_process_telegram;

use std::time::Duration;

use soloist::config::{Secret, Settings};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use fake_telegram::FakeTelegram;
use helpers::{Db, TestApp};

const CHATS: i64 = 200;
const FIRST_CHAT: i64 = 10_000;

fn main() {
    // `cargo test --all-targets` runs bench binaries too; only measure
    // under `cargo bench`, which passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("telegram bench: run it with `cargo bench --bench telegram`");
        return;
    }
    let runtime = common::two_worker_runtime();
    runtime.block_on(async {
        capacity(Db::Sqlite, 4000, true).await;
        latency(Db::Sqlite, 500, true).await;
        if std::env::var("SOLOIST_TEST_PG_URL").is_err() {
            println!("telegram bench: PostgreSQL skipped (SOLOIST_TEST_PG_URL unset)");
            return;
        }
        for durable in [true, false] {
            capacity(Db::Postgres, 4000, durable).await;
            latency(Db::Postgres, 500, durable).await;
        }
        telegram_pace().await;
    });
}

/// A soloist with its Telegram service running against a fresh fake.
async fn start(
    db: Db,
    rate_limits: bool,
    durable: bool,
) -> (TestApp, FakeTelegram, CancellationToken) {
    in_process_telegram::soloist_on_fake_telegram(
        db,
        FIRST_CHAT..FIRST_CHAT + CHATS,
        rate_limits,
        move |s: &mut Settings| {
            if !durable {
                let url = s.database.url.expose().unwrap_or_default();
                s.database.url =
                    Secret::new(format!("{url}&options=-c%20synchronous_commit%3Doff"));
            }
            s.database.max_connections = 8;
        },
    )
    .await
}

async fn sent(tg: &FakeTelegram) -> usize {
    tg.inspect(|s| s.sent.len())
}

fn database(db: Db, durable: bool) -> &'static str {
    match (db, durable) {
        (Db::Sqlite, _) => "SQLite (durable commits, flushed in groups)",
        (Db::Postgres, true) => "PostgreSQL (durable commits)",
        (Db::Postgres, false) => "PostgreSQL (synchronous_commit off)",
    }
}

async fn capacity(db: Db, updates: usize, durable: bool) {
    let (_test, tg, shutdown) = start(db, false, durable).await;
    let started = Instant::now();
    for n in 0..updates {
        tg.user_says(FIRST_CHAT + n as i64 % CHATS, "/help");
    }
    while sent(&tg).await < updates {
        assert!(started.elapsed() < Duration::from_secs(300), "not drained");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "capacity, {}, rate limits off: {updates} updates from {CHATS} chats in {:.2?} = {:.0} updates/s",
        database(db, durable),
        elapsed,
        updates as f64 / elapsed.as_secs_f64()
    );
    shutdown.cancel();
}

async fn latency(db: Db, samples: usize, durable: bool) {
    let (_test, tg, shutdown) = start(db, false, durable).await;
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples {
        let before = sent(&tg).await;
        let injected = Instant::now();
        tg.user_says(FIRST_CHAT + n as i64 % CHATS, "/help");
        let reply = loop {
            if let Some(reply) = tg.inspect(|s| s.sent.get(before).cloned()) {
                break reply;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(reply.sent_at - injected);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "added latency per update, {}, one at a time: n={samples} p50={:.2?} p99={:.2?} max={:.2?}",
        database(db, durable),
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    );
    shutdown.cancel();
}

async fn telegram_pace() {
    let (test, tg, shutdown) = start(Db::Postgres, true, true).await;
    tg.enforce_limits(Duration::from_secs(1), 30);
    let started = Instant::now();
    for chat in FIRST_CHAT..FIRST_CHAT + CHATS {
        tg.user_says(chat, "/help");
    }
    while sent(&tg).await < CHATS as usize {
        assert!(started.elapsed() < Duration::from_secs(120), "not drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (delivered, too_many, chats) = tg.inspect(|s| {
        let chats: std::collections::HashSet<i64> = s.sent.iter().map(|m| m.chat_id).collect();
        (s.sent.len(), s.too_many_requests, chats.len())
    });
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status <> 'delivered'")
            .fetch_one(test.app.store.pool())
            .await
            .unwrap();
    println!(
        "Telegram's pace, 200 replies to 200 chats: drained in {drained:.2?} ({:.1} messages/s), 429s={too_many}, delivered={delivered} to {chats} chats, undelivered rows={pending}",
        delivered as f64 / drained.as_secs_f64()
    );
    shutdown.cancel();
}
