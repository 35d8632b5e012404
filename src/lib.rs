//! # soloist
//!
//! A self-hosted AI workflow OS for one-person companies. The operator talks
//! to a bot (Telegram, Discord or the terminal); the bot runs durable flows
//! with model calls and approvals, and remembers what was decided.
//!
//! ## Layout
//!
//! The path of one message, left to right:
//!
//! - [`adapters`]: platform types end here. `console` is the terminal;
//!   `telegram` polls (or takes a webhook), records updates, answers buttons
//!   and delivers the outbox within Telegram's limits.
//!   `discord` takes slash commands, presses and mentions through the
//!   gateway (serenity) and delivers the outbox over REST.
//! - [`controller`]: who is speaking, which command or button, which flow.
//! - [`engine`]: durable runs: claim, execute a step, journal, suspend for
//!   approval or input, resume after a crash, replay.
//! - [`flows`]: flows as data (`config/flows/*.toml`) and prompt templates
//!   (`prompts/*.md`).
//! - [`agents`]: model calls through rig-core, with the cost ledger.
//! - [`memory`]: knowledge with provenance (ingest, chunks, full-text
//!   retrieval on both databases), the decision log, the chat window and
//!   working memory; the `retrieve` step and `/remember`, `/memory`,
//!   `/forget`, `/sources`.
//! - [`outbox`]: delivers queued messages to a platform, in order, within
//!   its rate limits, once.
//! - [`runtime`]: `soloist run`: the worker and the platforms until shutdown.
//! - [`store`]: PostgreSQL or SQLite, one set of queries for both.
//! - [`domain`]: `Inbound`, `Outbound`, buttons, ids, run events; no I/O.
//! - [`config`]: layered typed settings with secrets that never print.
//! - [`app`]: wiring: builds the pieces from settings.
//! - [`doctor`]: `soloist doctor`'s checks.

pub mod adapters;
pub mod agents;
pub mod app;
pub mod config;
pub mod controller;
pub mod doctor;
pub mod domain;
pub mod engine;
pub mod flows;
pub mod memory;
pub mod outbox;
pub mod runtime;
pub mod store;
