//! The `soloist` command: parse the CLI, load settings, start, wait.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use soloist::adapters::console::Console;
use soloist::app::App;
use soloist::config::{LoadOptions, Settings};
use soloist::domain::RunId;
use soloist::store::Store;
use soloist::{doctor, engine};

#[derive(Parser)]
#[command(
    name = "soloist",
    version,
    about = "A self-hosted AI workflow OS for one-person companies"
)]
struct Cli {
    /// Folder holding config/, prompts/ and data/ (files there override the built-in ones).
    #[arg(long, env = "SOLOIST_HOME", default_value = ".", global = true)]
    home: PathBuf,
    /// An extra config file, applied over config/default.toml.
    #[arg(long, env = "SOLOIST_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Talk to the bot in this terminal (same engine and store as the chat platforms).
    Chat,
    /// Run the bot on the configured chat platforms (Telegram, Discord), with the worker.
    Run,
    /// Apply database migrations.
    Migrate,
    /// Check configuration, database, model provider and tokens.
    Doctor,
    /// Add a file or a folder (Markdown, plain text, HTML) to what soloist knows.
    Ingest {
        /// A file, a folder read recursively, or an http(s) URL.
        #[arg(required_unless_present = "refresh")]
        path: Option<PathBuf>,
        /// Fetch every URL source again; changes are replaced and audited.
        #[arg(long)]
        refresh: bool,
    },
    /// Measure retrieval (`soloist eval retrieval FILE.tsv`) or lead
    /// qualification (`soloist eval leads FILE.jsonl`).
    Eval {
        /// What to evaluate: `retrieval` or `leads`.
        what: String,
        /// retrieval: a TSV file (a header line, then
        /// question<TAB>expected_source); leads: JSON lines with `expected_tier`.
        file: PathBuf,
    },
    /// Rebuild a run from its journal and print it.
    Replay {
        /// The run's id (its first characters are enough).
        run_id: String,
    },
    /// Copy the database to PATH while soloist runs (SQLite; for PostgreSQL use pg_dump).
    Backup {
        /// The new file (must not exist yet).
        path: PathBuf,
    },
    /// Print the daily digest and write its chart to a PNG file.
    Digest {
        /// Build it now (for yesterday) instead of waiting for its schedule.
        #[arg(long)]
        now: bool,
        /// Where the chart goes.
        #[arg(long, default_value = "digest.png")]
        chart: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    // Both ring and aws-lc-rs end up compiled in; rustls panics at the first
    // TLS connection unless one is chosen before.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&LoadOptions::from_process(
        cli.home.clone(),
        cli.config.clone(),
    ))?;
    init_logging(settings.log.format);
    match cli.command {
        Command::Chat => chat(settings, &cli.home).await,
        Command::Run => serve(settings, &cli.home).await,
        Command::Migrate => {
            let url = settings.database_url(&cli.home);
            let store = Store::open(&url, 1)
                .await
                .context("migrating the database")?;
            println!("database {} is up to date", store.backend().name());
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let findings = doctor::check(&settings, &cli.home).await;
            for finding in &findings {
                println!("{}", finding.line());
            }
            Ok(if findings.iter().any(|f| f.is_problem()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Backup { path } => {
            let url = settings.database_url(&cli.home);
            let written = soloist::backup::backup(&url, &path).await?;
            println!("backup written to {}", written.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { run_id } => replay(settings, &cli.home, &run_id).await,
        Command::Digest { now, chart } => digest(settings, &cli.home, now, &chart).await,
        Command::Ingest { path, refresh } => {
            soloist::memory::cli::ingest(settings, &cli.home, path.as_deref(), refresh).await
        }
        Command::Eval { what, file } if what == "leads" => {
            soloist::leads::eval::cli(settings, &cli.home, &file).await
        }
        Command::Eval { what, file } => {
            soloist::memory::cli::eval(settings, &cli.home, &what, &file).await
        }
    }
}

/// Logs to stderr, as text for people or JSON lines for collectors
/// (`log.format`); RUST_LOG sets the level.
fn init_logging(format: soloist::http::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        soloist::http::LogFormat::Json => builder.json().with_current_span(true).init(),
        soloist::http::LogFormat::Text => builder.init(),
    }
}

/// `soloist digest --now`: prints the digest and writes its chart.
async fn digest(
    settings: Settings,
    home: &std::path::Path,
    now: bool,
    chart: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    if !now {
        anyhow::bail!("soloist digest needs --now (the scheduled digest is sent by soloist run)");
    }
    let app = App::build(settings, home).await?;
    let digest = soloist::digest::build_now(&app.store, &app.settings, app.engine.prompts())
        .await
        .context("building the digest")?;
    println!("{}", digest.text);
    for approval in &digest.approvals {
        println!("\n{}", approval.text);
    }
    std::fs::write(chart, &digest.chart_png)
        .with_context(|| format!("writing the chart to {}", chart.display()))?;
    println!("\nchart: {}", chart.display());
    app.store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn chat(settings: Settings, home: &std::path::Path) -> anyhow::Result<ExitCode> {
    // As `run`: the local model is loaded here, before any step would load
    // it on an async worker.
    soloist::memory::embed::check(&settings).map_err(anyhow::Error::msg)?;
    let _single = soloist::coordination::lock_sqlite(&settings.database_url(home))?;
    let app = App::build(settings, home).await?;
    let banner = format!(
        "soloist {} — chatting as the owner of {} ({}, model: {})\nType /help for commands; Ctrl-D to leave.",
        env!("CARGO_PKG_VERSION"),
        app.settings.business.name,
        app.database_label,
        app.engine.agents().describe(),
    );
    // Non-urgent steps go out in batches while the operator types; their
    // results print with the next reply.
    let batches = tokio_util::sync::CancellationToken::new();
    tokio::spawn(soloist::runtime::batches(app.clone(), batches.clone()));
    // No scheduler here: reservations a dead process left are swept once.
    if let Err(error) = app.engine.agents().sweep_reservations().await {
        tracing::warn!(error = ?error, "sweeping reservations failed");
    }
    let console = Console::new(
        app.controller.clone(),
        tokio::io::stdout(),
        app.settings.business.owner.clone(),
    )
    .echo_input(!std::io::IsTerminal::is_terminal(&std::io::stdin()))
    .files_dir(home.join("files"));
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    console.run(stdin, &banner).await?;
    batches.cancel();
    app.store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Settings, home: &std::path::Path) -> anyhow::Result<ExitCode> {
    // An embedder that cannot work (a missing model folder) stops the start.
    soloist::memory::embed::check(&settings).map_err(anyhow::Error::msg)?;
    let _single = soloist::coordination::lock_sqlite(&settings.database_url(home))?;
    let app = App::build(settings, home).await?;
    let shutdown = soloist::runtime::shutdown_on_signal();
    let platforms = soloist::runtime::platform_services(&app, &shutdown);
    soloist::runtime::run(app.clone(), platforms, shutdown).await?;
    app.store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    settings: Settings,
    home: &std::path::Path,
    run_id: &str,
) -> anyhow::Result<ExitCode> {
    let app = App::build(settings, home).await?;
    let runs = match run_id.parse::<RunId>() {
        Ok(id) => app.store.run(id).await?.into_iter().collect(),
        Err(_) => app.store.runs_with_prefix(run_id).await?,
    };
    let [run] = runs.as_slice() else {
        anyhow::bail!("{} runs match '{run_id}'; give more of the id", runs.len());
    };
    let events = app.store.journal(run.id).await?;
    print!("{}", engine::render_replay(run, &events));
    Ok(ExitCode::SUCCESS)
}
