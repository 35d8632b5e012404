//! `cargo bench --bench chaos`: crash test with real processes. The built
//! `soloist run` binary against the fake Bot API and the fake model (from
//! `tests/api/`), killed with SIGKILL at random moments while scripted
//! operators draft and approve:
//!
//! 1. SQLite, one process, killed and restarted `SOLOIST_CHAOS_KILLS`
//!    times (default 100);
//! 2. PostgreSQL (with `SOLOIST_TEST_PG_URL`), three processes, one of the
//!    three killed at random and restarted `SOLOIST_CHAOS_PG_KILLS` times
//!    (default 20).
//!
//! Each operator sends `/draft`, waits for the offer, presses Approve,
//! waits for the offer to show the decision, and starts again; when the
//! kills are over the operators finish what they started. Printed per
//! scenario: runs asked / finished / lost, decisions duplicated, messages
//! sent twice (messages the fake received beyond the outbox rows marked
//! delivered: the documented send/record window), and approval offers
//! never delivered.
//!
//! A debug build is enough (`cargo build --benches`, then run
//! `target/debug/deps/chaos-* --bench`): the figures count, they do not time.

mod common;
#[allow(dead_code)]
#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/fake_telegram.rs"]
mod fake_telegram;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fake_llm::{Behavior, DEFAULT_DRAFT, FakeLlm};
use fake_telegram::{FakeTelegram, Sent};
use soloist::store::Store;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const OPERATORS: i64 = 4;
const FIRST_OPERATOR: i64 = 7_000;

#[derive(Debug, Default)]
struct Outcome {
    kills: usize,
    asked: u64,
    finished: i64,
    decisions_duplicated: i64,
    sent_twice: i64,
    offers_undelivered: i64,
    wall: Duration,
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too: only measure
    // under `cargo bench`, which passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("chaos bench: run it with `cargo bench --bench chaos`");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = common::two_worker_runtime();
    runtime.block_on(async {
        let kills = common::env_number("SOLOIST_CHAOS_KILLS", 100);
        let mut rows = vec![("SQLite, 1 process".to_string(), scenario(None, 1, kills).await)];
        match std::env::var("SOLOIST_TEST_PG_URL") {
            Ok(admin) => {
                let url = common::fresh_pg_database(&admin).await;
                let kills = common::env_number("SOLOIST_CHAOS_PG_KILLS", 20);
                rows.push((
                    "PostgreSQL, 3 processes".to_string(),
                    scenario(Some(url), 3, kills).await,
                ));
            }
            Err(_) => println!("(SOLOIST_TEST_PG_URL not set: PostgreSQL skipped)"),
        }
        println!();
        println!(
            "| scenario | SIGKILLs | runs asked | finished | lost | decisions duplicated | messages sent twice | offers never delivered | wall |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (label, o) in rows {
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {:.0?} |",
                o.kills,
                o.asked,
                o.finished,
                o.asked as i64 - o.finished,
                o.decisions_duplicated,
                o.sent_twice,
                o.offers_undelivered,
                o.wall
            );
        }
    });
}

/// A small xorshift: the moments of the kills need not be reproducible.
struct Random(u64);

impl Random {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42);
        Random(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Slot {
    child: Child,
    log: PathBuf,
}

fn spawn(home: &Path, config: &Path, url: Option<&str>, llm: &FakeLlm, log: &Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soloist"));
    command
        .args(["--config", config.to_str().unwrap(), "run"])
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("DISCORD_TOKEN")
        .env("SOLOIST_HOME", home)
        .env("OPENAI_BASE_URL", &llm.base_url)
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
    if let Some(url) = url {
        command.env("DATABASE_URL", url);
    }
    command.spawn().expect("start soloist run")
}

fn write_config(home: &Path, tg: &FakeTelegram) -> PathBuf {
    let users: Vec<String> = (0..OPERATORS)
        .map(|o| format!("\"{}\"", FIRST_OPERATOR + o))
        .collect();
    let path = home.join("chaos.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        "[telegram]\ntoken = \"{}\"\napi_url = \"{}\"\nallowed_user_ids = [{}]\npoll_timeout_secs = 1\nrate_limits = false\n\n\
         [policy.rate_limits]\nper_user_per_minute = 0\nper_user_burst = 0\nper_flow_per_minute = 0\nper_flow_burst = 0\n",
        tg.token,
        tg.api_url,
        users.join(", ")
    )
    .unwrap();
    path
}

async fn scenario(pg_url: Option<String>, processes: usize, kills: usize) -> Outcome {
    let started = Instant::now();
    let tg = FakeTelegram::start().await;
    let llm = FakeLlm::start().await;
    // A model call takes a moment, so kills land inside steps too.
    llm.always(Behavior::Delayed(
        Duration::from_millis(150),
        Box::new(Behavior::reply(DEFAULT_DRAFT)),
    ));
    let home = tempfile::tempdir().unwrap();
    let config = write_config(home.path(), &tg);
    let url = pg_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            home.path().join("data/soloist.db").display()
        )
    });
    let mut slots: Vec<Slot> = (0..processes)
        .map(|i| {
            let log = home.path().join(format!("process-{i}.log"));
            Slot {
                child: spawn(home.path(), &config, pg_url.as_deref(), &llm, &log),
                log,
            }
        })
        .collect();

    let no_new_drafts = CancellationToken::new();
    let asked = Arc::new(AtomicU64::new(0));
    let operators: Vec<_> = (0..OPERATORS)
        .map(|o| {
            tokio::spawn(operator(
                tg.clone(),
                FIRST_OPERATOR + o,
                no_new_drafts.clone(),
                asked.clone(),
            ))
        })
        .collect();

    let mut random = Random::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + random.below(1_200))).await;
        let slot = &mut slots[random.below(processes as u64) as usize];
        let _ = slot.child.kill();
        let _ = slot.child.wait();
        slot.child = spawn(home.path(), &config, pg_url.as_deref(), &llm, &slot.log);
    }
    no_new_drafts.cancel();
    for operator in operators {
        let _ = operator.await;
    }
    let asked = asked.load(Ordering::SeqCst);

    let store = Store::connect(&url, 1).await.expect("open the database");
    // Runs whose approval was pressed finish on their own: give them time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = 0;
    while Instant::now() < deadline {
        finished = scalar(
            &store,
            "SELECT COUNT(*) FROM runs WHERE status = 'completed'",
        )
        .await;
        if finished as u64 >= asked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let outcome = Outcome {
        kills,
        asked,
        finished,
        decisions_duplicated: scalar(
            &store,
            "SELECT COUNT(*) FROM (SELECT approval_id FROM decisions GROUP BY approval_id HAVING COUNT(*) > 1) d",
        )
        .await,
        sent_twice: sent_twice(&store, &tg).await,
        offers_undelivered: scalar(
            &store,
            "SELECT COUNT(*) FROM approvals a WHERE NOT EXISTS (
                 SELECT 1 FROM outbox o WHERE o.approval_id = a.id
                   AND o.approval_role = 'offer' AND o.status = 'delivered')",
        )
        .await,
        wall: started.elapsed(),
    };
    store.close().await;
    for slot in &mut slots {
        let _ = slot.child.kill();
        let _ = slot.child.wait();
    }
    outcome
}

async fn scalar(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap_or(-1)
}

/// Messages the fake received beyond the rows the outbox marked delivered
/// (per chat; closing an offer edits it, so only sending rows count).
async fn sent_twice(store: &Store, tg: &FakeTelegram) -> i64 {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT chat_id, COUNT(*) FROM outbox
         WHERE platform = 'telegram' AND status = 'delivered'
           AND (approval_role IS NULL OR approval_role = 'offer')
         GROUP BY chat_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap_or_default();
    let delivered: HashMap<String, i64> = rows.into_iter().collect();
    tg.inspect(|state| {
        let mut received: HashMap<String, i64> = HashMap::new();
        for sent in &state.sent {
            *received.entry(sent.chat_id.to_string()).or_default() += 1;
        }
        received
            .iter()
            .map(|(chat, n)| (n - delivered.get(chat).copied().unwrap_or(0)).max(0))
            .sum()
    })
}

/// Polls `look` for up to `secs`.
async fn within<T>(secs: u64, look: impl Fn() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(found) = look() {
            return Some(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Drafts and approves, one draft at a time, until `no_new_drafts`.
async fn operator(
    tg: FakeTelegram,
    user: i64,
    no_new_drafts: CancellationToken,
    asked: Arc<AtomicU64>,
) {
    let mut seen: HashSet<i64> = HashSet::new();
    let mut n = 0;
    while !no_new_drafts.is_cancelled() {
        tg.user_says(user, &format!("/draft chaos post {user}-{n}"));
        asked.fetch_add(1, Ordering::SeqCst);
        n += 1;
        let offer: Option<Sent> = within(120, || {
            tg.inspect(|s| {
                s.sent_to(user)
                    .into_iter()
                    .find(|m| !seen.contains(&m.message_id) && m.button("Approve").is_some())
            })
        })
        .await;
        let Some(offer) = offer else {
            continue;
        };
        seen.insert(offer.message_id);
        let approve = offer.button("Approve").unwrap_or_default();
        tg.press(user, &offer, &approve);
        let id = offer.message_id;
        within(120, || {
            tg.inspect(|s| {
                s.sent_to(user)
                    .into_iter()
                    .find(|m| m.message_id == id && m.keyboard.is_none())
            })
        })
        .await;
    }
}
