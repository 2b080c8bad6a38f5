//! Who is asking: console sessions, API tokens, CSRF and login throttling, as one axum layer
//! over the whole router (issue 13, ADR 0010).
//!
//! Guarantees:
//! - every route needs a logged-in staff member (session cookie) or an API token, except the
//!   login page, the console's static files, and `/healthz`, `/readyz` and `/metrics` from loopback;
//! - the acting staff id (`by`) is the session's or the token's ([`Actor`]); a JSON body's `by`
//!   is refused unless it names the same person, or the token has the `act_as` scope (an
//!   integration relaying a named staff member's action, as `staff/cmd` over MQTT does);
//! - a state-changing request with a session carries its CSRF token (`X-CSRF-Token` header or a
//!   `csrf` form field), compared in constant time; cookies are HttpOnly, SameSite=Strict, and
//!   Secure when the gateway serves HTTPS or is behind a declared TLS reverse proxy; the client
//!   address (throttling, loopback-only routes) is the TCP peer, or `X-Forwarded-For` only when
//!   that peer is a trusted proxy; sessions expire idle and absolutely and are rows, so
//!   logout, a password change and `eldergate user revoke` end them at once;
//! - failed logins are logged (staff id, address) and counted, and throttled per account and per
//!   address ([`throttle`]);
//! - what a role may do is checked in the domain operations (`roles.rs`), not here.

use crate::registry::Registry;
use crate::roles::Role;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub mod layer;
pub mod store;
pub mod throttle;

pub use layer::require_login;
pub use store::AccountStore;

/// Errors of the auth module.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The accounts database failed.
    #[error("accounts database: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// Anything else in the store.
    #[error("{0}")]
    Store(String),
    /// Too short or too long.
    #[error("a password needs {min} to {max} characters", min = store::MIN_PASSWORD_CHARS, max = store::MAX_PASSWORD_CHARS)]
    WeakPassword,
    /// Unknown, used or expired.
    #[error("this invite link is unknown, used or expired; ask an admin for a new one")]
    BadInvite,
}

/// Scopes of an API token (comma separated in `eldergate token create --scopes`).
pub const SCOPES: &[&str] = &["read", "alerts", "canteen", "roster", "vitals", "act_as"];

/// How the request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A console session; carries its CSRF token (for the pages' forms).
    Session {
        /// The session's CSRF token.
        csrf: String,
    },
    /// An API token with its scopes.
    Token {
        /// Scopes, comma separated.
        scopes: String,
    },
    /// Loopback without credentials: only `/healthz`, `/readyz` and `/metrics`.
    Loopback,
}

/// The logged-in staff member acting on a request (an axum extractor).
#[derive(Debug, Clone)]
pub struct Actor {
    /// Staff id: recorded as `by` of every action.
    pub staff_id: String,
    /// Their role in the staff registry.
    pub role: Role,
    /// How they proved it.
    pub via: Via,
}

impl Actor {
    /// Whether a token has `scope` (a session has every scope but `act_as`).
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.via {
            Via::Session { .. } => scope != "act_as",
            Via::Token { scopes } => scopes.split(',').any(|s| s.trim() == scope),
            Via::Loopback => false,
        }
    }

    /// The staff id to record as `by`: the actor's own; a body's `by` only when it names the
    /// actor, or the token may act for others (`act_as`).
    pub fn acting_for(&self, body_by: Option<String>) -> Result<String, Refused> {
        match body_by {
            None => Ok(self.staff_id.clone()),
            Some(b) if b == self.staff_id => Ok(b),
            Some(b) if self.has_scope("act_as") => Ok(b),
            Some(b) => Err(Refused::new(
                StatusCode::FORBIDDEN,
                "by_not_yours",
                format!("\"by\": {b:?} is not you ({}); leave \"by\" out: the gateway records the logged-in staff id", self.staff_id),
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = Refused;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Actor, Refused> {
        parts.extensions.get::<Actor>().cloned().ok_or_else(|| {
            Refused::new(
                StatusCode::UNAUTHORIZED,
                "no_login",
                "log in at /console/login, or send Authorization: Bearer TOKEN".into(),
            )
        })
    }
}

/// A request refused by the auth layer: JSON `{"error": …}`, counted and logged.
#[derive(Debug)]
pub struct Refused {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Refused {
    /// A refusal with its HTTP status, metric label and message.
    pub fn new(status: StatusCode, reason: &'static str, message: String) -> Refused {
        Refused {
            status,
            reason,
            message,
        }
    }
}

impl Refused {
    /// Status and message, counted and logged (for handlers that answer in their own type).
    pub fn parts(self) -> (StatusCode, String) {
        metrics::counter!("eldergate_http_rejected_total", "reason" => self.reason).increment(1);
        tracing::warn!(reason = self.reason, message = %self.message, "request refused");
        (self.status, self.message)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        metrics::counter!("eldergate_http_rejected_total", "reason" => self.reason).increment(1);
        tracing::warn!(reason = self.reason, message = %self.message, "request refused by the auth layer");
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message, "reason": self.reason })),
        )
            .into_response()
    }
}

/// What the auth layer needs.
#[derive(Clone)]
pub struct Auth {
    /// The accounts database.
    pub store: AccountStore,
    /// Staff ids and roles.
    pub registry: Arc<Registry>,
    /// Failed-login throttle.
    pub throttle: Arc<throttle::Throttle>,
    /// Session idle expiry, seconds.
    pub idle_s: i64,
    /// Session absolute expiry, seconds.
    pub max_s: i64,
    /// Set `Secure` on cookies: the browser speaks HTTPS (the gateway's own TLS, or a proxy's).
    pub secure_cookies: bool,
    /// Behind a declared reverse proxy: the peers whose `X-Forwarded-For` is believed (`None`:
    /// no proxy, the header is ignored; an empty list: loopback peers).
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
}

impl Auth {
    /// The role of a registered staff id.
    pub fn role(&self, staff_id: &str) -> Option<Role> {
        crate::roles::role_of(&self.registry, staff_id)
    }

    /// The session cookie for `sid`.
    pub fn session_cookie(&self, sid: &str) -> String {
        format!(
            "{}={sid}; Path=/; HttpOnly; SameSite=Strict{}",
            layer::SESSION_COOKIE,
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// A cookie that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            layer::SESSION_COOKIE,
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }
}

/// Constant-time comparison of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
