//! What the writer runs: typed operations owned by their domains.
//!
//! A domain (alerting, canteen, roster, supervision, forwarding, intake …) defines one type per
//! operation and implements [`Operation`] for it: its lane, its cost, `apply` inside the
//! writer's transaction, and what to do once the transaction committed. The writer knows none of
//! them: it boxes each into a [`Job`] and runs it inside its own SAVEPOINT.
//!
//! Invariants:
//! - `apply` returns `Err(OpError::Refused)` for input it will not act on (a typed [`Refusal`]:
//!   nothing it wrote survives) and `Err(OpError::Failed)` when SQLite failed; both roll back
//!   this operation only and are answered after the batch commits.
//! - `after_commit` runs only after COMMIT returned (the transaction is on disk).

use super::tx::{Context, Tx};
use super::JournalError;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

/// Which queue an operation waits in. Alarm-lane work is always taken first and is never
/// committed together with bulk work, so an alarm waits for at most one bulk commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Alarm presses, staff actions on alerts, escalations, supervision observations.
    Alarm,
    /// Everything else (taps, heartbeats, dead letters, audit records, forwarding progress).
    Bulk,
}

/// How a refusal maps to HTTP and to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The thing named does not exist (HTTP 404).
    NotFound,
    /// It exists but its state does not allow this, or someone else did it first (HTTP 409).
    Conflict,
    /// The request itself is wrong: a value out of range, an unknown staff id … (HTTP 422).
    Invalid,
    /// The staff member's role may not do this (HTTP 403).
    Forbidden,
}

/// Why an operation was not acted on. Nothing it wrote is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// What class of refusal (HTTP status, NAK reason).
    pub kind: RefusalKind,
    /// Short machine-readable reason (metric label, dead-letter reason, JSON `reason`).
    pub reason: &'static str,
    /// What was wrong and what to do, for people.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind` with a reason label and a message.
    pub fn new(kind: RefusalKind, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            reason,
            message: message.into(),
        }
    }

    /// 404: the thing named does not exist.
    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::NotFound, reason, message)
    }

    /// 409: the state does not allow it.
    pub fn conflict(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Conflict, reason, message)
    }

    /// 403: the acting staff member's role may not do this.
    pub fn forbidden(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Forbidden, reason, message)
    }

    /// 422: the request is wrong.
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Invalid, reason, message)
    }
}

/// Why `apply` did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpError {
    /// Refused on its merits.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// SQLite failed (a constraint, I/O): this operation is rolled back and answered with it.
    #[error(transparent)]
    Failed(#[from] JournalError),
}

impl From<sqlx::Error> for OpError {
    fn from(e: sqlx::Error) -> Self {
        OpError::Failed(e.into())
    }
}

/// What a waiter gets when the operation was not acted on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// Refused: a definite answer (do not retry unchanged).
    #[error(transparent)]
    Refused(Refusal),
    /// Not committed because the batch's COMMIT failed or the writer stopped: nothing was
    /// acknowledged, retrying later may succeed.
    #[error(transparent)]
    Journal(JournalError),
    /// This operation failed on its own (an SQLite error inside it, or a panic: a bug) and was
    /// rolled back alone. Retrying it unchanged fails again: the transports keep it as a dead
    /// letter and release the broker's delivery instead of holding every later ack behind it.
    #[error("the operation failed and was rolled back: {0}")]
    Broken(String),
}

/// An operation on the journal, owned by its domain.
pub trait Operation: Send + 'static {
    /// What the waiter receives after commit.
    type Answer: Send + 'static;
    /// Name for logs and metric labels (`eldergate_op_refusals_total{op}` …).
    const NAME: &'static str;
    /// Which lane it waits in.
    fn lane(&self) -> Lane;
    /// Rows it writes, to keep bulk transactions short; an operation that must be alone in its
    /// batch (a roster import) says [`super::BULK_BUDGET`].
    fn cost(&self) -> usize {
        1
    }
    /// Applies it inside the writer's transaction (its own SAVEPOINT).
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<Self::Answer, OpError>>;
    /// After COMMIT: publish what changed (alert changes to the notifier, a new roster …).
    fn after_commit(&mut self, _answer: &mut Self::Answer, _ctx: &Context) {}
}

/// What happened to a job in its batch.
pub(crate) enum Outcome<A> {
    Pending,
    Done(A),
    Refused(Refusal),
    Failed(JournalError),
}

/// A boxed operation with its waiter: what the writer queues.
pub(crate) trait Job: Send {
    fn lane(&self) -> Lane;
    fn cost(&self) -> usize;
    fn name(&self) -> &'static str;
    /// Applies; true when it is to be kept, false when its savepoint must be rolled back.
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, bool>;
    /// Marks the job failed by a panic (its savepoint is rolled back).
    fn panicked(&mut self);
    /// The refusal reason, when refused (for the counter).
    fn refusal(&self) -> Option<&'static str>;
    /// The error, when it failed (for the log).
    fn error(&self) -> Option<String>;
    /// The batch committed: run `after_commit` and answer.
    fn committed(self: Box<Self>, ctx: &Context);
    /// The batch did not commit: answer with `e`.
    fn failed(self: Box<Self>, e: JournalError);
}

/// Where an answer goes.
pub(crate) type Reply<A> = oneshot::Sender<Result<A, Failure>>;

/// What a job queued "until committed" does when its batch fails to commit: queue it again (with
/// backoff, in a task of its own) and answer `reply` once it is settled. Called only on that
/// failure, so the common case costs no task.
pub(crate) type Resubmit<A> = Box<dyn FnOnce(JournalError, Reply<A>) + Send>;

pub(crate) struct Queued<O: Operation> {
    pub op: O,
    pub reply: Option<Reply<O::Answer>>,
    pub outcome: Outcome<O::Answer>,
    /// Set by `Journal::submit_until_committed`.
    pub resubmit: Option<Resubmit<O::Answer>>,
}

impl<O: Operation> Job for Queued<O> {
    fn lane(&self) -> Lane {
        self.op.lane()
    }
    fn cost(&self) -> usize {
        self.op.cost()
    }
    fn name(&self) -> &'static str {
        O::NAME
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (keep, outcome) = match self.op.apply(tx).await {
                Ok(a) => (true, Outcome::Done(a)),
                Err(OpError::Refused(r)) => (false, Outcome::Refused(r)),
                Err(OpError::Failed(e)) => (false, Outcome::Failed(e)),
            };
            self.outcome = outcome;
            keep
        })
    }
    fn panicked(&mut self) {
        self.outcome = Outcome::Failed(JournalError::Write(format!(
            "operation {} panicked; it was rolled back (a bug: please report it with the log)",
            O::NAME
        )));
    }
    fn refusal(&self) -> Option<&'static str> {
        match &self.outcome {
            Outcome::Refused(r) => Some(r.reason),
            _ => None,
        }
    }
    fn error(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Failed(e) => Some(e.to_string()),
            _ => None,
        }
    }
    fn committed(mut self: Box<Self>, ctx: &Context) {
        let answer = match std::mem::replace(&mut self.outcome, Outcome::Pending) {
            Outcome::Done(mut a) => {
                self.op.after_commit(&mut a, ctx);
                Ok(a)
            }
            Outcome::Refused(r) => Err(Failure::Refused(r)),
            Outcome::Failed(e) => Err(Failure::Broken(e.to_string())),
            Outcome::Pending => Err(Failure::Broken("operation was not applied".into())),
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(answer);
        }
    }
    fn failed(mut self: Box<Self>, e: JournalError) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        match self.resubmit.take() {
            Some(again) if matches!(e, JournalError::Write(_)) => again(e, reply),
            _ => {
                let _ = reply.send(Err(Failure::Journal(e)));
            }
        }
    }
}
