//! `cargo bench --bench discord`: the resident memory (RSS) of `soloist run`
//! with Telegram and Discord connected to local fakes
//! (tests/api/fake_telegram.rs, tests/api/fake_discord.rs) and a fake model: idle, then after a burst of 200 messages from the
//! owner (half `/draft …`, which call the model and post an approval with
//! buttons; half `/runs`) spread over 20 DM channels. Prints where the
//! resident memory lies (the binary's code, heap, other anonymous memory,
//! shared libraries) from /proc/PID/smaps.
//!
//! Then, as a separate process with Telegram alone and its rate limits
//! lifted, a long run: `SOLOIST_SOAK_UPDATES` `/help` updates (default
//! 100,000) with the RSS sampled every tenth of them, to show whether the
//! resident memory grows after warm-up (`SOLOIST_SOAK_UPDATES=0` skips it).
//!
//! `SOLOIST_BENCH_WRAPPER` runs the process under a profiler and
//! `SOLOIST_BENCH_HOLD_SECS` keeps it alive after the burst, for a look from
//! outside (see `soloist_run` and the README's reading of stop 25).
//!
//! Linux only (it reads /proc). The process runs on SQLite, as a first
//! `soloist run` does.

#[allow(dead_code)]
#[path = "../tests/api/fake_discord.rs"]
mod fake_discord;
#[allow(dead_code)]
#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
// fake_telegram.rs allows its own dead code.
#[path = "../tests/api/fake_telegram.rs"]
mod fake_telegram;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_discord::{FakeDiscord, Place, TOKEN, User};

const OWNER: User = User {
    id: "111000000000000001",
    name: "Maya",
};
const BURST: usize = 200;
const CHANNELS: usize = 20;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("discord bench: run it with `cargo bench --bench discord`");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(measure());
    let soak: usize = std::env::var("SOLOIST_SOAK_UPDATES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    if soak > 0 {
        runtime.block_on(long_run(soak));
    }
}

/// `updates` `/help` messages from the owner through Telegram, ten rounds,
/// the RSS read after each round once the round's replies are all out.
async fn long_run(updates: usize) {
    let telegram = fake_telegram::FakeTelegram::start().await;
    let llm = fake_llm::FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let mut child = soloist_run(
        home.path(),
        &telegram,
        &llm,
        &[("SOLOIST__TELEGRAM__RATE_LIMITS", "false")],
    );
    telegram
        .wait_for(30, "long polling", |s| {
            (!s.offsets.is_empty()).then_some(())
        })
        .await;
    let round = (updates / 10).max(1);
    let started = Instant::now();
    let mut sent = 0;
    println!("long run: {updates} /help updates, Telegram only, rate limits lifted");
    while sent < updates {
        for _ in 0..round.min(updates - sent) {
            telegram.user_says(4242, "/help");
            sent += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(900);
        while telegram.inspect(|s| s.sent.len()) < sent {
            assert!(Instant::now() < deadline, "replies stalled at {sent}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rss = status_field(child.id(), "VmRSS:");
        println!(
            "    after {sent:>7} updates ({:>6.1?}): VmRSS {rss}",
            started.elapsed()
        );
    }
    stop(&mut child);
}

/// `soloist run` on SQLite in `home`, with Telegram (owner 4242) and the
/// fake model, plus `extra` variables.
fn soloist_run(
    home: &std::path::Path,
    telegram: &fake_telegram::FakeTelegram,
    llm: &fake_llm::FakeLlm,
    extra: &[(&str, &str)],
) -> Child {
    // `SOLOIST_BENCH_WRAPPER="heaptrack -o /tmp/soloist"` runs the child
    // under a profiler. Its RSS figures are then the wrapper's, and the
    // stop's SIGTERM reaches the wrapper only: stop `soloist run` yourself
    // afterwards (heaptrack writes its file when the process ends).
    let wrapper = std::env::var("SOLOIST_BENCH_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(env!("CARGO_BIN_EXE_soloist"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_soloist")),
    };
    command
        .arg("run")
        .current_dir(home)
        .env_remove("DATABASE_URL")
        .env("TELEGRAM_BOT_TOKEN", &telegram.token)
        .env("SOLOIST__TELEGRAM__API_URL", &telegram.api_url)
        .env("SOLOIST__OWNER__TELEGRAM_USER_ID", "4242")
        .env("OPENAI_BASE_URL", &llm.base_url)
        .env("OPENAI_API_KEY", "sk-bench-not-a-real-key")
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start soloist run")
}

fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_string())
        .unwrap_or_default()
}

async fn measure() {
    let discord = FakeDiscord::start().await;
    let telegram = fake_telegram::FakeTelegram::start().await;
    let llm = fake_llm::FakeLlm::start().await;
    let home = tempfile::tempdir().unwrap();
    let mut child = soloist_run(
        home.path(),
        &telegram,
        &llm,
        &[
            ("DISCORD_TOKEN", TOKEN),
            ("SOLOIST__DISCORD__API_URL", &discord.api_url),
            ("SOLOIST__OWNER__DISCORD_USER_ID", OWNER.id),
        ],
    );
    discord
        .wait_for("the gateway session", |w| w.connected().then_some(()))
        .await;
    telegram
        .wait_for(30, "long polling", |s| {
            (!s.offsets.is_empty()).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    report(
        "idle, Telegram (long polling) and Discord (gateway) connected",
        &child,
    );

    let started = Instant::now();
    for n in 0..BURST {
        let channel = format!("7000000000000{:05}", n % CHANNELS);
        let text = if n % 2 == 0 {
            format!("/draft post number {n} about the Website Audit")
        } else {
            "/runs".to_string()
        };
        discord.post(OWNER, Place::Dm, &channel, &text, false);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let total = loop {
        let replies = discord.see(|w| w.messages.len());
        if replies >= BURST {
            break replies;
        }
        assert!(
            Instant::now() < deadline,
            "only {replies} replies after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "burst: {BURST} messages in {CHANNELS} channels answered ({total} replies) in {:.1?}",
        started.elapsed()
    );
    // The worker trims the allocator every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    report(&format!("after a burst of {BURST} messages"), &child);
    // Time to look at the process from outside (gdb, /proc) before it stops.
    if let Some(hold) = std::env::var("SOLOIST_BENCH_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("holding pid {} for {hold} s", child.id());
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    stop(&mut child);
}

fn report(moment: &str, child: &Child) {
    let pid = child.id();
    let field = |name: &str| status_field(pid, name);
    println!(
        "{moment}: VmRSS {} (peak {}), threads {}",
        field("VmRSS:"),
        field("VmHWM:"),
        field("Threads:")
    );
    for (place, kib) in where_it_lies(pid) {
        println!("    {place:<32} {:>7.1} MiB", kib as f64 / 1024.0);
    }
}

/// Resident KiB by kind of mapping.
fn where_it_lies(pid: u32) -> BTreeMap<&'static str, u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut totals = BTreeMap::new();
    let mut kind = "other";
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            let name = line.split_whitespace().nth(5).unwrap_or("");
            kind = if name.ends_with("/soloist") {
                "soloist binary (code, data)"
            } else if name == "[heap]" {
                "heap (brk)"
            } else if name.is_empty() {
                "anonymous (mmap'd heap, stacks)"
            } else if name.starts_with("[stack") {
                "main stack"
            } else if name.contains(".so") {
                "shared libraries"
            } else {
                "other"
            };
        } else if let Some(rest) = line.strip_prefix("Rss:") {
            *totals.entry(kind).or_insert(0) += kib(rest);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            // Pages only swap could free; the rest (code, read-only data)
            // the kernel can drop and read again from the binary.
            *totals
                .entry("~ of it all, anonymous (private)")
                .or_insert(0) += kib(rest);
        }
    }
    totals
}

fn kib(field: &str) -> u64 {
    field
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
}
