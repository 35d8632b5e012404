//! `cargo bench --bench burst`: the draft burst. N chats each send one
//! `/draft` at once through the Rust fake Bot API
//! (`tests/api/fake_telegram.rs`) to `soloist run`'s Telegram service, with
//! the fake model answering at once (`tests/api/fake_llm.rs`) and the
//! outbox's rate limits lifted. For SQLite and PostgreSQL, N = 200 and
//! N = 1,000, it prints:
//!
//! - drafts/s (all N offers delivered, from the first update injected);
//! - p50/p99 from an update's injection to its offer reaching the fake;
//! - the first offer's latency;
//! - the share of offers delivered in each tenth of the wall time (a wave
//!   at the end shows as most of them in the last tenths);
//! - peak RSS (VmHWM) of soloist;
//! - the model calls made (exactly N when no step is paid twice).
//!
//! Each case runs twice, in a child process of its own each time, so each
//! peak is its own: **in process** (soloist's Telegram service and the two
//! fakes in one process, as the tests run them; the peak is theirs
//! together) and **as `soloist run`** (the release binary started on its
//! own with a config file, the fakes in the bench's process; the peak is
//! soloist's alone, what a user's machine sees). `BURST_MODES=process` or
//! `=in-process` runs one of them. PostgreSQL cases need
//! `SOLOIST_TEST_PG_URL`; without it they are skipped.

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

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use helpers::Db;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const FIRST_CHAT: i64 = 10_000;
const CASE: &str = "--burst-case";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == CASE) {
        let (db, n, mode) = parse_case(&args[at + 1]);
        run_case(db, n, mode);
        return;
    }
    // `cargo test --all-targets` runs bench binaries too; only measure
    // under `cargo bench`, which passes --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("burst bench: run it with `cargo bench --bench burst`");
        return;
    }
    let has_pg = std::env::var("SOLOIST_TEST_PG_URL").is_ok();
    let sizes: Vec<i64> = std::env::var("BURST_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![200, 1000]);
    let modes: Vec<String> = std::env::var("BURST_MODES")
        .map(|m| m.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| vec!["in-process".into(), "process".into()]);
    for db in ["sqlite", "postgres"] {
        if db == "postgres" && !has_pg {
            println!("burst bench: PostgreSQL skipped (SOLOIST_TEST_PG_URL unset)");
            continue;
        }
        for n in &sizes {
            for mode in &modes {
                let status = Command::new(std::env::current_exe().unwrap())
                    .arg(CASE)
                    .arg(format!("{db}:{n}:{mode}"))
                    .status()
                    .unwrap();
                assert!(status.success(), "the {db} N={n} {mode} case failed");
            }
        }
    }
}

/// `sqlite:1000` or `postgres:200:process` (the mode defaults to in
/// process).
fn parse_case(case: &str) -> (Db, i64, Mode) {
    let mut parts = case.split(':');
    let db = match parts.next() {
        Some("sqlite") => Db::Sqlite,
        _ => Db::Postgres,
    };
    let n = parts.next().unwrap().parse().unwrap();
    let mode = match parts.next() {
        Some("process") => Mode::OwnProcess,
        _ => Mode::InProcess,
    };
    (db, n, mode)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    InProcess,
    OwnProcess,
}

fn run_case(db: Db, n: i64, mode: Mode) {
    let runtime = common::two_worker_runtime();
    runtime.block_on(burst(db, n, mode));
}

/// The soloist under measurement, in this process or in its own.
enum Subject {
    InProcess {
        test: Box<helpers::TestApp>,
        shutdown: CancellationToken,
    },
    OwnProcess {
        child: Child,
        llm: fake_llm::FakeLlm,
        _home: tempfile::TempDir,
        /// The fresh PostgreSQL database's URL, dropped after the case.
        database: Option<String>,
    },
}

impl Subject {
    fn model_calls(&self) -> usize {
        match self {
            Subject::InProcess { test, .. } => test.llm.calls(),
            Subject::OwnProcess { llm, .. } => llm.calls(),
        }
    }

    /// A `/proc/PID/status` figure of the process soloist runs in, KiB.
    fn kib(&self, field: &str) -> u64 {
        match self {
            Subject::InProcess { .. } => status_kib("self", field),
            Subject::OwnProcess { child, .. } => status_kib(&child.id().to_string(), field),
        }
    }

    async fn stop(self) {
        match self {
            Subject::InProcess { shutdown, .. } => {
                shutdown.cancel();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Subject::OwnProcess {
                mut child,
                database,
                ..
            } => {
                let _ = Command::new("kill")
                    .arg("-INT")
                    .arg(child.id().to_string())
                    .status();
                let _ = child.wait();
                if let Some(url) = database {
                    let admin = std::env::var("SOLOIST_TEST_PG_URL").unwrap();
                    common::drop_pg_database(&admin, &url).await;
                }
            }
        }
    }
}

async fn in_process(db: Db, n: i64) -> (Subject, fake_telegram::FakeTelegram) {
    let (test, tg, shutdown) =
        in_process_telegram::soloist_on_fake_telegram(db, FIRST_CHAT..FIRST_CHAT + n, false, |s| {
            s.models.timeout_secs = 60;
        })
        .await;
    (
        Subject::InProcess {
            test: Box::new(test),
            shutdown,
        },
        tg,
    )
}

/// `soloist run` (the release binary) in a home of its own, with the
/// settings the in-process case gets from the tests' helpers written to
/// its `config/default.toml`.
async fn own_process(db: Db, n: i64) -> (Subject, fake_telegram::FakeTelegram) {
    let tg = fake_telegram::FakeTelegram::start().await;
    let llm = fake_llm::FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let allowed: Vec<String> = (FIRST_CHAT..FIRST_CHAT + n)
        .map(|c| c.to_string())
        .collect();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/default.toml"),
        format!(
            "[telegram]\nallowed_user_ids = [{}]\nrate_limits = false\npoll_timeout_secs = 10\n\
             [policy]\nfast_review = false\n\
             [policy.rate_limits]\nper_user_per_minute = 0\nper_user_burst = 0\n\
             per_flow_per_minute = 0\nper_flow_burst = 0\n",
            allowed.join(", ")
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_soloist"));
    command
        .arg("run")
        .current_dir(home.path())
        .env_remove("DATABASE_URL")
        .env("TELEGRAM_BOT_TOKEN", &tg.token)
        .env("SOLOIST__TELEGRAM__API_URL", &tg.api_url)
        .env("OPENAI_BASE_URL", &llm.base_url)
        .env("OPENAI_API_KEY", "sk-bench-not-a-real-key")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let database = match db {
        Db::Postgres => {
            let admin = std::env::var("SOLOIST_TEST_PG_URL").unwrap();
            Some(common::fresh_pg_database(&admin).await)
        }
        Db::Sqlite => None,
    };
    if let Some(url) = &database {
        command.env("DATABASE_URL", url);
    }
    let child = command.spawn().expect("start soloist run");
    tg.wait_for(60, "the first poll", |s| {
        (!s.offsets.is_empty()).then_some(())
    })
    .await;
    (
        Subject::OwnProcess {
            child,
            llm,
            _home: home,
            database,
        },
        tg,
    )
}

async fn burst(db: Db, n: i64, mode: Mode) {
    let (subject, tg) = match mode {
        Mode::InProcess => in_process(db, n).await,
        Mode::OwnProcess => own_process(db, n).await,
    };
    // The burst comes to a process that has settled: its start-up work
    // (schedules written from the config, the first claims of events and
    // the outbox) otherwise lands on the first updates' path, which is a
    // cost of starting, not of the burst. `BURST_SETTLE_MS=0` measures
    // a burst at the first poll.
    let settle = common::env_number("BURST_SETTLE_MS", 1000);
    tokio::time::sleep(Duration::from_millis(settle as u64)).await;
    let rss_before = subject.kib("VmRSS");

    let started = Instant::now();
    let mut injected = Vec::with_capacity(n as usize);
    for chat in FIRST_CHAT..FIRST_CHAT + n {
        tg.user_says(chat, "/draft a post about the new audit price");
        injected.push((chat, Instant::now()));
    }
    // Only the messages sent since the last look are read: rescanning
    // (and parsing the buttons of) every message each time took a tenth of
    // the two cores soloist is measured on.
    let mut offers: Vec<(i64, Instant)> = Vec::with_capacity(n as usize);
    let mut seen = 0;
    let offers = loop {
        tg.inspect(|s| {
            offers.extend(
                s.sent[seen..]
                    .iter()
                    .filter(|m| m.button("Approve").is_some())
                    .map(|m| (m.chat_id, m.sent_at)),
            );
            seen = s.sent.len();
        });
        if offers.len() >= n as usize {
            break offers;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {n} offers after 10 minutes",
            offers.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let wall = offers.iter().map(|(_, at)| *at).max().unwrap() - started;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = subject.model_calls();

    let offered: std::collections::HashMap<i64, Instant> = offers.iter().copied().collect();
    let mut latencies: Vec<Duration> = injected
        .iter()
        .map(|(chat, at)| offered[chat].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let first = offers.iter().map(|(_, at)| *at).min().unwrap() - started;
    let mut tenths = [0usize; 10];
    for (_, sent) in &offers {
        let share = (*sent - started).as_secs_f64() / wall.as_secs_f64();
        tenths[((share * 10.0) as usize).min(9)] += 1;
    }
    let tenths: Vec<String> = tenths
        .iter()
        .map(|c| format!("{:.0}%", *c as f64 * 100.0 / offers.len() as f64))
        .collect();
    let name = match db {
        Db::Sqlite => "SQLite",
        Db::Postgres => "PostgreSQL",
    };
    let place = match mode {
        Mode::InProcess => "in process (peak: soloist and the fakes)",
        Mode::OwnProcess => "as soloist run (peak: soloist alone)",
    };
    println!(
        "draft burst, {name}, N={n}, {place}: {:.0} drafts/s (wall {wall:.2?}); update to offer p50={:.2?} p99={:.2?}; first offer after {first:.2?}; per tenth of the wall time [{}]; RSS before {} MiB, peak {} MiB; model calls {calls} for {n} drafts",
        n as f64 / wall.as_secs_f64(),
        at(0.5),
        at(0.99),
        tenths.join(" "),
        rss_before / 1024,
        subject.kib("VmHWM") / 1024,
    );
    subject.stop().await;
}

/// A `/proc/PID/status` figure in KiB (0 where there is none).
fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
