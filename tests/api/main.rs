//! soloist's integration tests: one binary, real databases (a fresh
//! PostgreSQL database per test, SQLite in a temp dir), real HTTP to a fake
//! model server.

mod fake_discord;
mod fake_llm;
mod fake_telegram;
mod fixtures;
mod helpers;

mod approvals;
mod batch;
mod console;
mod digest;
mod discord;
mod doctor;
mod failures;
mod http;
mod memory;
mod models;
mod offers;
mod outbox;
mod policy;
mod recovery;
mod routing;
mod schedules;
mod store;
mod telegram;
