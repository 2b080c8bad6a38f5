//! eldergate: the community elderly-care gateway.
//!
//! A set of actors wired by bounded channels (see `app`):
//!
//! - [`ingest`]: MQTT publishes → checked input or a dead letter; acks after commit.
//! - [`serial`]: the same for frames from serial ports (protocol/SPEC.md).
//! - [`journal`]: the single writer of the SQLite journal (group commit, fsync, dedupe, alerts).
//! - [`notifier`]: committed alert changes → staff topics (broadcast and per person), live
//!   listeners (SSE) and the escalator.
//! - [`alerting`]: escalation ladders, device supervision, daily check-in, webhooks.
//! - [`vitals`]: health-kiosk readings: units, rules, sessions, FHIR export.
//! - [`forwarder`]: journal events → [`central`] store, exactly once in effect; [`central_link`]:
//!   TLS to the central PostgreSQL, no plaintext fallback; [`tls`]: the process's one TLS stack.
//! - [`http`]: health, metrics, alert API.
//! - [`retention`]: what the journal forgets once the central store has it.
//! - [`config`] / [`registry`]: validated configuration and what it names.
//! - [`broker`]: the embedded MQTT broker for the demo (cargo feature `embedded-broker`, off by
//!   default); [`mqtt`]: connection handling.
//!
//! The simulators, the load generator and the demo are crate `eldergate-sim` (sim/), not here.
//!
//! See ARCHITECTURE.md at the repository root for the invariants of each module.
#![deny(missing_docs)]

pub mod alerting;
pub mod app;
pub mod auth;
pub mod backup;
pub mod broker;
pub mod canteen;
pub mod central;
pub mod central_link;
pub mod community;
pub mod config;
pub mod console;
pub mod district;
pub mod forwarder;
pub mod health;
pub mod http;
pub mod ingest;
pub mod intake;
pub mod journal;
pub mod mqtt;
pub mod notifier;
pub mod problem;
pub mod provision;
pub mod registry;
pub mod retention;
pub mod roles;
pub mod roster;
pub mod serial;
pub mod service;
pub mod tls;
pub mod vitals;
