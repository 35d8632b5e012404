//! `cargo bench --bench cluster`: capacity with several `soloist run`
//! processes on one PostgreSQL database. The real `soloist` binary of the
//! build (the release one under `cargo bench`), started once or twice
//! against one fresh database, the Rust fake Bot API
//! (`tests/api/fake_telegram.rs`) with the outbox's rate limits lifted and
//! the zero-latency fake model (`tests/api/fake_llm.rs`). The same load
//! runs against one process and against two, so the figures compare:
//!
//! 1. `/help` capacity: `CLUSTER_HELP_UPDATES` updates (default 4,000) from
//!    200 chats injected at once; updates/s until every reply reached the
//!    fake, and p50/p99 from an update's injection to its reply;
//! 2. the draft burst: one `/draft` from each of N chats at once
//!    (`CLUSTER_SIZES`, default `200,1000`); drafts/s, p50/p99 from the
//!    update to its offer, the first offer's latency, and the checks that
//!    exactly N model calls were made and each chat got exactly one offer;
//! 3. the same `/help` load in webhook mode (`CLUSTER_WEBHOOK=0` skips it):
//!    each process serves the webhook on its own port and the bench posts
//!    the updates as Telegram would (at most 40 requests at a time), to
//!    each process in turn, as a round-robin reverse proxy would.
//!
//! With long polling exactly one process polls the bot (a leased row): the
//! other takes no updates, it only claims runs and outbox rows. Each case
//! prints the CPU seconds each process used, which shows how the work was
//! shared. Replies beyond one per update and chats with more than one
//! offer are listed. Needs `SOLOIST_TEST_PG_URL`; `CLUSTER_KEEP=1` keeps
//! each case's database and home (their names are printed) to look into.

mod common;
#[allow(dead_code)]
#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/fake_telegram.rs"]
mod fake_telegram;

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake_llm::FakeLlm;
use fake_telegram::FakeTelegram;
use tokio::time::Instant;

const FIRST_CHAT: i64 = 10_000;
const HELP_CHATS: i64 = 200;
const WEBHOOK_SECRET: &str = "cluster_bench_secret";
const WEBHOOK_PATH: &str = "/telegram/hook";
/// Connections Telegram opens to a webhook at most (its default
/// `max_connections`).
const WEBHOOK_CONNECTIONS: usize = 40;

fn main() {
    // `cargo test --all-targets` runs bench binaries too: only measure
    // under `cargo bench`, which passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: run it with `cargo bench --bench cluster`");
        return;
    }
    let Ok(admin) = std::env::var("SOLOIST_TEST_PG_URL") else {
        println!("cluster bench: skipped (SOLOIST_TEST_PG_URL unset)");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let help_updates = common::env_number("CLUSTER_HELP_UPDATES", 4_000);
    let sizes: Vec<usize> = std::env::var("CLUSTER_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![200, 1_000]);
    let webhook = common::env_number("CLUSTER_WEBHOOK", 1) != 0;
    let runtime = common::two_worker_runtime();
    runtime.block_on(async {
        let mut rows: Vec<(String, [String; 2])> = Vec::new();
        let mut pair = Vec::new();
        for processes in [1, 2] {
            pair.push(help_capacity(&admin, processes, help_updates, Intake::Polling).await);
        }
        rows.push((
            format!("`/help` capacity, polling, {help_updates} updates from {HELP_CHATS} chats"),
            [pair[0].clone(), pair[1].clone()],
        ));
        for n in &sizes {
            let mut pair = Vec::new();
            for processes in [1, 2] {
                pair.push(draft_burst(&admin, processes, *n).await);
            }
            rows.push((
                format!("draft burst N={n}, polling"),
                [pair[0].clone(), pair[1].clone()],
            ));
        }
        if webhook {
            let mut pair = Vec::new();
            for processes in [1, 2] {
                pair.push(help_capacity(&admin, processes, help_updates, Intake::Webhook).await);
            }
            rows.push((
                format!(
                    "`/help` capacity, webhook, {help_updates} updates from {HELP_CHATS} chats"
                ),
                [pair[0].clone(), pair[1].clone()],
            ));
        }
        println!();
        println!("| case | 1 process | 2 processes |");
        println!("|---|---|---|");
        for (case, [one, two]) in rows {
            println!("| {case} | {one} | {two} |");
        }
    });
}

#[derive(Clone, Copy, PartialEq)]
enum Intake {
    Polling,
    Webhook,
}

/// `processes` × `soloist run` on one fresh PostgreSQL database, with the
/// fakes they talk to. Dropping it kills the processes.
struct Cluster {
    home: tempfile::TempDir,
    children: Vec<Child>,
    tg: FakeTelegram,
    llm: FakeLlm,
    admin: String,
    database: String,
    /// Webhook mode: the port each process serves the webhook on.
    webhook_ports: Vec<u16>,
}

impl Cluster {
    async fn start(admin: &str, processes: usize, chats: Range<i64>, intake: Intake) -> Cluster {
        let database = common::fresh_pg_database(admin).await;
        let tg = FakeTelegram::start().await;
        let llm = FakeLlm::start().await;
        let home = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            home,
            children: Vec::new(),
            tg,
            llm,
            admin: admin.to_string(),
            database,
            webhook_ports: Vec::new(),
        };
        match intake {
            Intake::Polling => cluster.start_polling(processes, chats).await,
            Intake::Webhook => cluster.start_webhook(processes, chats).await,
        }
        cluster
    }

    /// The first process takes the polling lease; the others are started
    /// once it polls and counted ready when they say they stand by.
    async fn start_polling(&mut self, processes: usize, chats: Range<i64>) {
        let config = self.write_config(0, chats, "");
        self.spawn(&config, 0);
        self.tg
            .wait_for(60, "the first process polling", |s| {
                (!s.offsets.is_empty()).then_some(())
            })
            .await;
        for i in 1..processes {
            self.spawn(&config, i);
            let log = self.log(i);
            wait_until(60, "a second process standing by", || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("standing by")
            })
            .await;
        }
    }

    /// Each process serves the webhook on a port of its own; the bench
    /// posts the updates itself, in turn to each (`post_updates`).
    async fn start_webhook(&mut self, processes: usize, chats: Range<i64>) {
        for i in 0..processes {
            let port = free_port();
            let extra = format!(
                "mode = \"webhook\"\nwebhook_url = \"http://127.0.0.1:{port}{WEBHOOK_PATH}\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
            );
            let config = self.write_config(i, chats.clone(), &extra);
            self.spawn(&config, i);
            wait_until(60, "a process serving its webhook", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .await;
            self.webhook_ports.push(port);
        }
        self.tg
            .wait_for(60, "setWebhook", |s| s.webhook.clone())
            .await;
    }

    fn write_config(
        &self,
        i: usize,
        chats: Range<i64>,
        telegram_extra: &str,
    ) -> std::path::PathBuf {
        let users: Vec<String> = chats.map(|c| format!("\"{c}\"")).collect();
        let path = self.home.path().join(format!("cluster-{i}.toml"));
        let mut file = std::fs::File::create(&path).unwrap();
        write!(
            file,
            "[telegram]\ntoken = \"{}\"\napi_url = \"{}\"\nallowed_user_ids = [{}]\npoll_timeout_secs = 10\nrate_limits = false\n{telegram_extra}\n\
             [policy.rate_limits]\nper_user_per_minute = 0\nper_user_burst = 0\nper_flow_per_minute = 0\nper_flow_burst = 0\n",
            self.tg.token,
            self.tg.api_url,
            users.join(", ")
        )
        .unwrap();
        path
    }

    fn log(&self, i: usize) -> std::path::PathBuf {
        self.home.path().join(format!("process-{i}.log"))
    }

    fn spawn(&mut self, config: &Path, i: usize) {
        let log = std::fs::File::create(self.log(i)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_soloist"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .current_dir(self.home.path())
            .env_remove("DATABASE_URL")
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("DISCORD_TOKEN")
            .env("SOLOIST_HOME", self.home.path())
            .env("DATABASE_URL", &self.database)
            .env("OPENAI_BASE_URL", &self.llm.base_url)
            .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
            .env("RUST_LOG", "error,soloist::coordination=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start soloist run");
        self.children.push(child);
    }

    /// CPU seconds (user + system) each process used so far.
    fn cpu_secs(&self) -> Vec<f64> {
        self.children.iter().map(|c| cpu_secs(c.id())).collect()
    }

    /// Kills the processes and drops the database.
    async fn stop(mut self) {
        self.kill();
        if std::env::var("CLUSTER_KEEP").is_ok() {
            println!(
                "  kept: database {} and home {}",
                self.database,
                self.home.path().display()
            );
            std::mem::forget(std::mem::replace(
                &mut self.home,
                tempfile::tempdir().unwrap(),
            ));
            return;
        }
        common::drop_pg_database(&self.admin, &self.database).await;
    }

    fn kill(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `/proc/PID/stat`'s utime + stime, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: the fields after it are counted
    // from its closing parenthesis (utime and stime are fields 14 and 15).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn cpu_used(before: &[f64], after: &[f64]) -> String {
    let used: Vec<String> = before
        .iter()
        .zip(after)
        .map(|(b, a)| format!("{:.1}", a - b))
        .collect();
    format!("CPU s per process {}", used.join(" + "))
}

async fn wait_until(secs: u64, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Plays Telegram in webhook mode: posts one update per entry of `chats`
/// with `text`, over at most `WEBHOOK_CONNECTIONS` requests at a time,
/// each to the next of `ports` in turn (a round-robin reverse proxy in
/// front of the processes). Returns when each update is posted, by chat.
async fn post_updates(ports: &[u16], chats: Vec<i64>, text: &str) -> HashMap<i64, Vec<Instant>> {
    let client = reqwest::Client::new();
    let chats = Arc::new(chats);
    let next = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(std::sync::Mutex::new(Vec::with_capacity(chats.len())));
    let senders: Vec<_> = (0..WEBHOOK_CONNECTIONS)
        .map(|_| {
            let (client, chats, next, posted) =
                (client.clone(), chats.clone(), next.clone(), posted.clone());
            let ports = ports.to_vec();
            let text = text.to_string();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chat) = chats.get(i).copied() else {
                        return;
                    };
                    let update = serde_json::json!({
                        "update_id": 900_000_001 + i as i64,
                        "message": fake_telegram::user_message(chat, chat, serde_json::json!({"text": text})),
                    });
                    let url = format!("http://127.0.0.1:{}{WEBHOOK_PATH}", ports[i % ports.len()]);
                    let at = Instant::now();
                    // Telegram retries an update its webhook did not take.
                    loop {
                        let answer = client
                            .post(&url)
                            .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
                            .json(&update)
                            .send()
                            .await;
                        if answer.is_ok_and(|a| a.status().is_success()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    posted.lock().unwrap().push((chat, at));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let mut by_chat: HashMap<i64, Vec<Instant>> = HashMap::new();
    for (chat, at) in posted.lock().unwrap().iter() {
        by_chat.entry(*chat).or_default().push(*at);
    }
    for times in by_chat.values_mut() {
        times.sort();
    }
    by_chat
}

/// The model calls made, by model: the draft's generation goes to the
/// quality tier, its review to the fast one (most reviews of the one
/// fake draft text are answered from the response cache, so they make no
/// call).
fn calls_by_model(llm: &FakeLlm) -> Vec<(String, usize)> {
    let mut by_model: HashMap<String, usize> = HashMap::new();
    for request in llm.requests() {
        let model = request["model"].as_str().unwrap_or("?").to_string();
        *by_model.entry(model).or_default() += 1;
    }
    let mut by_model: Vec<(String, usize)> = by_model.into_iter().collect();
    by_model.sort();
    by_model
}

/// The p-quantile of sorted `samples`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

async fn help_capacity(admin: &str, processes: usize, updates: usize, intake: Intake) -> String {
    let cluster = Cluster::start(
        admin,
        processes,
        FIRST_CHAT..FIRST_CHAT + HELP_CHATS,
        intake,
    )
    .await;
    let tg = &cluster.tg;
    let cpu_before = cluster.cpu_secs();
    let started = Instant::now();
    let chats: Vec<i64> = (0..updates)
        .map(|n| FIRST_CHAT + n as i64 % HELP_CHATS)
        .collect();
    let injected = match intake {
        Intake::Polling => {
            let mut injected: HashMap<i64, Vec<Instant>> = HashMap::new();
            for chat in chats {
                tg.user_says(chat, "/help");
                injected.entry(chat).or_default().push(Instant::now());
            }
            injected
        }
        Intake::Webhook => post_updates(&cluster.webhook_ports, chats, "/help").await,
    };
    let replies = || tg.inspect(|s| s.sent.len());
    wait_for(
        started,
        updates,
        "replies",
        Duration::from_millis(2),
        replies,
    )
    .await;
    let cpu_after = cluster.cpu_secs();
    // Anything sent after the last expected reply would be a duplicate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (wall, mut latencies, extra) = tg.inspect(|s| {
        let last = s.sent.iter().map(|m| m.sent_at).max().unwrap();
        // Replies in one chat leave in order, so a chat's k-th reply
        // answers its k-th update.
        let mut latencies = Vec::with_capacity(updates);
        for (chat, at) in &injected {
            for (reply, asked) in s.sent_to(*chat).iter().zip(at) {
                latencies.push(reply.sent_at.saturating_duration_since(*asked));
            }
        }
        let beyond: Vec<String> = injected
            .iter()
            .filter_map(|(chat, at)| {
                let replies = s.sent_to(*chat);
                (replies.len() > at.len()).then(|| {
                    let texts: Vec<String> = replies
                        .iter()
                        .map(|m| m.visible().chars().take(40).collect())
                        .collect();
                    format!(
                        "chat {chat}: {} replies to {} updates {texts:?}",
                        replies.len(),
                        at.len()
                    )
                })
            })
            .collect();
        for line in &beyond {
            println!("  beyond one reply per update: {line}");
        }
        (last - started, latencies, s.sent.len() - updates)
    });
    latencies.sort();
    let intake_name = match intake {
        Intake::Polling => "polling",
        Intake::Webhook => "webhook",
    };
    println!(
        "/help capacity, {intake_name}, {processes} process(es): {updates} updates in {wall:.2?} = {:.0} updates/s; update to reply p50={:.2?} p99={:.2?}; replies beyond one per update: {extra}; {}",
        updates as f64 / wall.as_secs_f64(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        cpu_used(&cpu_before, &cpu_after)
    );
    let figure = format!(
        "{:.0} updates/s, p50 {:.0} ms, p99 {:.0} ms; {}",
        updates as f64 / wall.as_secs_f64(),
        quantile(&latencies, 0.5).as_secs_f64() * 1e3,
        quantile(&latencies, 0.99).as_secs_f64() * 1e3,
        cpu_used(&cpu_before, &cpu_after)
    );
    cluster.stop().await;
    figure
}

async fn draft_burst(admin: &str, processes: usize, n: usize) -> String {
    let chats = FIRST_CHAT..FIRST_CHAT + n as i64;
    let cluster = Cluster::start(admin, processes, chats.clone(), Intake::Polling).await;
    let tg = &cluster.tg;
    let cpu_before = cluster.cpu_secs();
    let started = Instant::now();
    let mut injected = Vec::with_capacity(n);
    for chat in chats.clone() {
        tg.user_says(chat, "/draft a post about the new audit price");
        injected.push((chat, Instant::now()));
    }
    let offers = || {
        tg.inspect(|s| {
            s.sent
                .iter()
                .filter(|m| m.button("Approve").is_some())
                .map(|m| (m.chat_id, m.sent_at))
                .collect::<Vec<_>>()
        })
    };
    wait_for(started, n, "offers", Duration::from_millis(5), || {
        offers().len()
    })
    .await;
    let cpu_after = cluster.cpu_secs();
    // A step run twice would call the model or offer again after this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let offers = offers();
    let calls = cluster.llm.calls();
    let mut per_chat: HashMap<i64, usize> = HashMap::new();
    for (chat, _) in &offers {
        *per_chat.entry(*chat).or_default() += 1;
    }
    let one_offer_each = chats.clone().all(|c| per_chat.get(&c) == Some(&1));
    for (chat, count) in per_chat.iter().filter(|(_, count)| **count > 1) {
        println!("  chat {chat} got {count} offers");
    }
    let first_offer: HashMap<i64, Instant> = offers.iter().rev().copied().collect();
    let wall = offers.iter().map(|(_, at)| *at).max().unwrap() - started;
    let first = offers.iter().map(|(_, at)| *at).min().unwrap() - started;
    let mut latencies: Vec<Duration> = injected
        .iter()
        .map(|(chat, at)| first_offer[chat].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let by_model: Vec<String> = calls_by_model(&cluster.llm)
        .iter()
        .map(|(model, count)| format!("{count} {model}"))
        .collect();
    let checks = format!(
        "model calls {calls} for {n} drafts ({}); {}",
        by_model.join(" + "),
        if one_offer_each {
            "one offer per chat".to_string()
        } else {
            format!(
                "NOT one offer per chat ({} offers to {} chats)",
                offers.len(),
                per_chat.len()
            )
        }
    );
    println!(
        "draft burst, N={n}, {processes} process(es): {:.0} drafts/s (wall {wall:.2?}); update to offer p50={:.2?} p99={:.2?}; first offer after {first:.2?}; {checks}; {}",
        n as f64 / wall.as_secs_f64(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        cpu_used(&cpu_before, &cpu_after)
    );
    let figure = format!(
        "{:.0} drafts/s, p50 {:.2} s, p99 {:.2} s, first {:.0} ms; {checks}; {}",
        n as f64 / wall.as_secs_f64(),
        quantile(&latencies, 0.5).as_secs_f64(),
        quantile(&latencies, 0.99).as_secs_f64(),
        first.as_secs_f64() * 1e3,
        cpu_used(&cpu_before, &cpu_after)
    );
    cluster.stop().await;
    figure
}

/// Waits until `count()` reaches `n`, looking every `poll`; fails after 10
/// minutes from `started`, saying how many `what` there were.
async fn wait_for(
    started: Instant,
    n: usize,
    what: &str,
    poll: Duration,
    count: impl Fn() -> usize,
) {
    loop {
        let got = count();
        if got >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {got} of {n} {what} after 10 minutes"
        );
        tokio::time::sleep(poll).await;
    }
}
