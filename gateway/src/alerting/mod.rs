//! The alert engine's timers and watchers, all outside the writer: they observe and ask; the
//! writer decides and records.
//!
//! - [`escalator`]: walks each unacknowledged alert up its priority's ladder.
//! - [`supervisor`]: device offline / back online, low battery, with a grace period after start
//!   and after broker reconnects.
//! - [`checkin`]: the daily check-in of residents living alone.
//! - [`webhooks`]: delivers the webhook outbox, retrying until 2xx.
//!
//! Invariant: every timer here is derived from what the journal holds (alert `raised_at` and
//! `escalation_step`, `checkin_runs`, open alerts), so a restart neither forgets nor double-fires.

pub mod checkin;
pub mod escalator;
pub mod supervisor;
pub mod webhooks;
