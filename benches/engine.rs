//! `cargo bench --bench engine`: the engine's own cost per journaled step
//! (claim, fold the journal, execute a model-free step, commit events and
//! status in one transaction) on SQLite and PostgreSQL, and the cold start
//! of `soloist chat` to its first prompt. Prints median, p99 and mean.
//!
//! PostgreSQL is measured when `SOLOIST_TEST_PG_URL` is set (see
//! `SOLOIST_TEST_SETUP_ONLY=1 scripts/test.sh`).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fresh_pg_database, report};
use soloist::app::App;
use soloist::config::{LoadOptions, Settings};
use soloist::domain::{ChatRef, Platform};
use soloist::engine::{StartRun, StepOutcome};

const STEPS_PER_RUN: usize = 10;
const RUNS: usize = 200;

fn main() {
    // `cargo test --all-targets` runs bench binaries too; only measure
    // under `cargo bench`, which passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("engine bench: run it with `cargo bench --bench engine`");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        report("journaled step, SQLite", &step_overhead(&sqlite).await);
        match std::env::var("SOLOIST_TEST_PG_URL") {
            Ok(admin) => {
                let url = fresh_pg_database(&admin).await;
                report("journaled step, PostgreSQL", &step_overhead(&url).await);
            }
            Err(_) => println!("journaled step, PostgreSQL: skipped (SOLOIST_TEST_PG_URL unset)"),
        }
    });
    report(
        "soloist chat cold start to prompt (existing db)",
        &cold_starts(20),
    );
}

/// Times every `try_execute_step` of RUNS runs of a flow of STEPS_PER_RUN
/// context steps: the engine's overhead with no model in the way.
async fn step_overhead(url: &str) -> Vec<Duration> {
    let home = tempfile::tempdir().unwrap();
    write_bench_flow(home.path());
    let mut settings = Settings::load(&LoadOptions::default()).unwrap();
    settings.database.url = soloist::config::Secret::new(url.to_string());
    let app = App::build(settings, home.path()).await.unwrap();
    let mut samples = Vec::with_capacity(RUNS * STEPS_PER_RUN);
    for n in 0..RUNS {
        let run = app
            .engine
            .start(StartRun {
                flow: "bench".into(),
                chat: ChatRef::new(Platform::Console, "bench"),
                request: "measure".into(),
                requested_by: "bench".into(),
                idempotency_key: format!("bench-{n}"),
            })
            .await
            .unwrap();
        for _ in 0..STEPS_PER_RUN {
            let started = Instant::now();
            let outcome = app.engine.try_execute_step(run).await.unwrap();
            samples.push(started.elapsed());
            assert!(matches!(outcome, StepOutcome::Executed(_)), "{outcome:?}");
            // `try_execute_step` keeps its lease, as a worker that crashed
            // after the commit would; free it (untimed) so the next step's
            // claim measures the same work as before: claim, fold, execute,
            // commit.
            sqlx::query("UPDATE runs SET lease_owner = NULL WHERE id = $1")
                .bind(run.to_string())
                .execute(app.store.pool())
                .await
                .unwrap();
        }
    }
    app.store.close().await;
    samples
}

fn write_bench_flow(home: &Path) {
    let mut flow =
        String::from("name = \"bench\"\ndescription = \"bench\"\ncost_label = \"low-cost\"\n");
    for i in 0..STEPS_PER_RUN {
        flow.push_str(&format!("[[steps]]\nname = \"s{i}\"\nkind = \"context\"\n"));
    }
    std::fs::create_dir_all(home.join("config/flows")).unwrap();
    std::fs::write(home.join("config/flows/bench.toml"), flow).unwrap();
}

/// Starts `soloist chat` `times` times on one home (the first start creates
/// and migrates the database and is not counted) and times the wait for the
/// first prompt.
fn cold_starts(times: usize) -> Vec<Duration> {
    let home = tempfile::tempdir().unwrap();
    let mut samples = Vec::new();
    for attempt in 0..=times {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_soloist"))
            .arg("chat")
            .current_dir(home.path())
            .env_remove("DATABASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"> ") && stdout.read(&mut byte).unwrap() == 1 {
            seen.push(byte[0]);
        }
        let elapsed = started.elapsed();
        child.stdin.take().unwrap().write_all(b"").unwrap();
        child.wait().unwrap();
        if attempt > 0 {
            samples.push(elapsed);
        }
    }
    samples
}
