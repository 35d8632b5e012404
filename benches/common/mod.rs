//! What the bench binaries share: a fresh PostgreSQL database, the
//! runtime they measure on, settings read from the environment, and the
//! figures printed one line each.

// Each bench binary uses its own part of this module.
#![allow(dead_code)]

use std::time::Duration;

use soloist::store::Store;

/// A new, empty database on the server `admin` points at.
pub async fn fresh_pg_database(admin: &str) -> String {
    let name = format!("soloist_test_bench_{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(admin, 1).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Drops the database at `url` (one [`fresh_pg_database`] made), through
/// the server `admin` points at; ends any connection still open to it.
pub async fn drop_pg_database(admin: &str, url: &str) {
    let Some(name) = url::Url::parse(url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_string())
    else {
        return;
    };
    let store = Store::connect(admin, 1).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(store.pool())
    .await;
    store.close().await;
}

/// Prints `what: n=… median=… p99=… mean=…`.
pub fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    println!(
        "{what}: n={} median={:?} p99={:?} mean={:?}",
        sorted.len(),
        at(0.5),
        at(0.99),
        mean
    );
}

/// The runtime the pipeline benches measure on: two workers, as on the
/// two-core machines their figures are for.
pub fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The number in the environment variable `name`, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
