//! soloist's integration tests: one binary, real databases (a fresh
//! PostgreSQL database per test, SQLite in a temp dir), real HTTP to a fake
//! model server.

mod fake_discord;
mod fake_llm;
mod fake_smtp;
mod fake_telegram;
mod fixtures;
mod helpers;
mod tcp_proxy;

mod approvals;
mod autonomy;
mod backup;
mod batch;
mod cluster;
mod console;
mod digest;
mod discord;
mod discord_takeover;
mod doctor;
mod email;
mod events;
mod failures;
mod flows;
mod funnel;
mod gaps;
mod http;
mod leads;
mod leads_flow;
mod leads_jobs;
#[cfg(feature = "local-embed")]
mod local_embed;
mod memory;
mod models;
mod offers;
mod outbox;
mod pipeline;
mod policy;
mod recovery;
mod routing;
mod schedules;
mod store;
mod telegram;
