//! `soloist run`: the long-running bot. A worker that resumes runnable runs
//! (after a crash, or woken by another process), the scheduler, the HTTP
//! server (when `http.listen` is set) and every configured chat platform,
//! until Ctrl-C or SIGTERM.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::adapters::{discord, telegram};
use crate::app::App;
use crate::frontdoor::{Handles, error_chain};

/// A service that runs until the token is cancelled; its error, if any,
/// stops the whole process.
pub type Service = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "no chat platform is configured: set TELEGRAM_BOT_TOKEN or DISCORD_TOKEN (soloist chat needs neither)"
    )]
    NoPlatform,
    #[error("{0}")]
    Service(String),
}

/// The services of every chat platform configured in `app.settings`
/// (a platform is configured when its token is set).
pub fn platform_services(app: &App, shutdown: &CancellationToken) -> Vec<Service> {
    let mut services: Vec<Service> = Vec::new();
    let handles = Handles::of(app);
    if app.settings.telegram.token.is_set() {
        let (handles, shutdown) = (handles.clone(), shutdown.clone());
        services.push(Box::pin(async move {
            telegram::run(handles, shutdown)
                .await
                .map_err(|error| format!("telegram: {}", error_chain(&error)))
        }));
    }
    if app.settings.discord.token.is_set() {
        let shutdown = shutdown.clone();
        services.push(Box::pin(async move {
            discord::run(handles, shutdown)
                .await
                .map_err(|error| format!("discord: {}", error_chain(&error)))
        }));
    }
    services
}

/// Runs the worker and `platforms` until `shutdown` is cancelled or one of
/// them fails.
pub async fn run(
    app: App,
    platforms: Vec<Service>,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    if platforms.is_empty() {
        return Err(RuntimeError::NoPlatform);
    }
    let mut services = tokio::task::JoinSet::new();
    services.spawn(batches(app.clone(), shutdown.clone()));
    services.spawn(crate::scheduler::service(&app, shutdown.clone()));
    services.spawn(crate::events::service(&app, shutdown.clone()));
    if let Some(http) = crate::http::service(&app, shutdown.clone())
        .await
        .map_err(|error| RuntimeError::Service(format!("http: {}", error_chain(&error))))?
    {
        services.spawn(http);
    }
    services.spawn(crate::email::service(
        app.store.clone(),
        app.settings.email.clone(),
        shutdown.clone(),
    ));
    services.spawn(worker(app, shutdown.clone()));
    for platform in platforms {
        services.spawn(platform);
    }
    let mut outcome = Ok(());
    while let Some(finished) = services.join_next().await {
        let result = finished
            .unwrap_or_else(|panic| Err(format!("a service panicked: {panic}")))
            .and_then(|()| ended_on_request(&shutdown));
        if let Err(error) = result {
            tracing::error!(%error, "service stopped; shutting down");
            if outcome.is_ok() {
                outcome = Err(RuntimeError::Service(error));
            }
        }
        shutdown.cancel();
    }
    outcome
}

/// A service that ends before shutdown was asked for has stopped working:
/// that is a failure, whatever it returned.
fn ended_on_request(shutdown: &CancellationToken) -> Result<(), String> {
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        Err("a service stopped on its own before shutdown; see the log above".into())
    }
}

/// Resumes runnable runs nobody holds: crash leftovers, and runs woken while
/// their worker was busy. Every few seconds, and at once at start.
async fn worker(app: App, shutdown: CancellationToken) -> Result<(), String> {
    // One line per outage (a database restart), not one per round.
    let mut failing = false;
    loop {
        match app.engine.resume_runnable().await {
            Err(error) if !failing => {
                tracing::error!(error = ?error, "resuming runs failed; will try again");
                failing = true;
            }
            Err(error) => tracing::debug!(error = ?error, "resuming runs still fails"),
            Ok(_) if failing => {
                tracing::info!("resuming runs works again");
                failing = false;
            }
            Ok(_) => {}
        }
        release_free_memory();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Hands the allocator's free pages back to the system. glibc keeps what a
/// burst freed (fragmented over its per-thread arenas), so without this a
/// one-off peak would stay resident for good; trimming costs a walk of the
/// free lists every few seconds.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free memory
    // held by the allocator to the system, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sends non-urgent calls in batches when due, collects batches that came
/// back and drives their runs on, every `models.batch.poll_secs`. (Abandoned
/// budget reservations are swept by the `sweep_reservations` schedule.)
pub async fn batches(app: App, shutdown: CancellationToken) -> Result<(), String> {
    let batcher = app.engine.agents().batcher();
    loop {
        match batcher.tick(false).await {
            Ok(woken) => {
                for run in woken {
                    if let Err(error) = app.engine.drive(run).await {
                        tracing::error!(error = ?error, %run, "driving a run after its batch failed");
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "batch round failed; will try again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(batcher.poll_interval()) => {}
        }
    }
}

/// Cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            // Without a SIGTERM handler (a sandbox that forbids it) the
            // process still stops on Ctrl-C; a container's stop would then
            // end in SIGKILL, which the journal survives.
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "no SIGTERM handler; stopping on Ctrl-C only");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
