//! The axum middleware that puts an [`Actor`] on every request or refuses it (see `auth.rs`).

use super::{same_secret, Actor, Auth, Refused, Via};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::net::{IpAddr, SocketAddr};

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "eg_session";

/// Largest form body read to find its CSRF field.
const MAX_FORM_BYTES: usize = 64 << 10;

/// The TCP peer of a request, put on it by the server (`http/serve.rs`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Paths anyone may open: the login page, invites, the console's static files, the language
/// switch.
fn is_public(path: &str) -> bool {
    path == "/console/login"
        || path == "/console/lang"
        || path.starts_with("/console/invite/")
        || path.starts_with("/console/static/")
}

/// The client's address, and whether it is this machine: the TCP peer, or, when that peer is a
/// trusted reverse proxy (`http.behind_proxy`, `http.trusted_proxies`), the last
/// `X-Forwarded-For` entry (the one the proxy added). Anyone else's `X-Forwarded-For` is ignored,
/// so that a client cannot pick the address the login throttle counts.
pub fn client_addr(
    auth: &Auth,
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
) -> (IpAddr, bool) {
    let peer = extensions
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let trusted = match &auth.trusted_proxies {
        None => false,
        Some(list) if list.is_empty() => peer.is_loopback(),
        Some(list) => list.contains(&peer),
    };
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    match (trusted, forwarded) {
        (true, Some(ip)) => (ip, false),
        _ => (peer, peer.is_loopback()),
    }
}

/// The value of cookie `name`.
pub fn cookie<'a>(req: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    req.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The token scope a request needs.
fn scope_needed(method: &Method, path: &str) -> &'static str {
    if method == Method::GET || method == Method::HEAD {
        "read"
    } else if path.starts_with("/api/alerts") {
        "alerts"
    } else if path.starts_with("/api/roster") {
        "roster"
    } else if path.starts_with("/api/residents/") && path.ends_with("/vital-targets") {
        "vitals"
    } else {
        "canteen"
    }
}

/// The middleware: see the module doc of `auth.rs`.
pub async fn require_login(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if is_public(&path) {
        return next.run(req).await;
    }
    let (_, loopback) = client_addr(&auth, req.extensions(), req.headers());
    let open_on_loopback = path == "/healthz" || path == "/readyz" || path == "/metrics";
    match identify(&auth, req.headers().clone()).await {
        Ok(Some(actor)) => authorize(auth, actor, req, next).await,
        Ok(None) if open_on_loopback && loopback => {
            let mut req = req;
            req.extensions_mut().insert(Actor {
                staff_id: String::new(),
                role: crate::roles::Role::Other,
                via: Via::Loopback,
            });
            next.run(req).await
        }
        Ok(None) if path.starts_with("/console") && req.method() == Method::GET => {
            Redirect::to("/console/login").into_response()
        }
        Ok(None) => Refused::new(
            StatusCode::UNAUTHORIZED,
            "no_login",
            "log in at /console/login, or send Authorization: Bearer TOKEN (eldergate token create)".into(),
        )
        .into_response(),
        Err(r) => r.into_response(),
    }
}

/// Who the request's credentials name, if any; a credential that is present but wrong is
/// refused (not treated as anonymous).
async fn identify(auth: &Auth, headers: axum::http::HeaderMap) -> Result<Option<Actor>, Refused> {
    let store_failed = |e: super::AuthError| {
        tracing::error!(error = %e, "accounts database failed");
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "accounts_unavailable",
            "the accounts database cannot be read; try again, and tell the administrator".into(),
        )
    };
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let secret = v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let row = auth.store.token(secret).await.map_err(store_failed)?;
        let Some(row) = row else {
            metrics::counter!("eldergate_auth_failed_total", "kind" => "token").increment(1);
            return Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "this API token is unknown or revoked; create one with eldergate token create"
                    .into(),
            ));
        };
        let Some(role) = auth.role(&row.staff_id) else {
            return Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "token_staff_gone",
                format!(
                    "this token acts as {}, who is no longer in the staff registry",
                    row.staff_id
                ),
            ));
        };
        return Ok(Some(Actor {
            staff_id: row.staff_id,
            role,
            via: Via::Token { scopes: row.scopes },
        }));
    }
    let Some(sid) = cookie(&headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let row = auth
        .store
        .session(sid, auth.idle_s, auth.max_s)
        .await
        .map_err(store_failed)?;
    Ok(match row {
        Some(s) => auth.role(&s.staff_id).map(|role| Actor {
            staff_id: s.staff_id,
            role,
            via: Via::Session { csrf: s.csrf },
        }),
        // An expired or revoked session is anonymous: the console sends it to the login page.
        None => None,
    })
}

/// Scopes for tokens, CSRF (and a same-origin check) for sessions; then the handler.
async fn authorize(auth: Auth, actor: Actor, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let safe = method == Method::GET || method == Method::HEAD || method == Method::OPTIONS;
    let mut req = req;
    match &actor.via {
        Via::Token { .. } => {
            if path.starts_with("/console") {
                return Refused::new(
                    StatusCode::FORBIDDEN,
                    "token_on_console",
                    "API tokens are for /api; the console needs a login".into(),
                )
                .into_response();
            }
            let scope = scope_needed(&method, &path);
            if !actor.has_scope(scope) {
                return Refused::new(
                    StatusCode::FORBIDDEN,
                    "token_scope",
                    format!("this API token lacks the {scope:?} scope needed for {method} {path}"),
                )
                .into_response();
            }
        }
        Via::Session { csrf } if !safe => {
            if let Some(origin) = req
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
            {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok());
                let origin_host = origin.split("://").nth(1);
                if origin != "null" && origin_host != host {
                    return Refused::new(
                        StatusCode::FORBIDDEN,
                        "cross_origin",
                        format!("a request from {origin} may not change anything here"),
                    )
                    .into_response();
                }
            }
            let (sent, rebuilt) = match csrf_of(req).await {
                Ok(x) => x,
                Err(r) => return r.into_response(),
            };
            req = rebuilt;
            if !sent.as_deref().is_some_and(|s| same_secret(s, csrf)) {
                return Refused::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "this request has no valid CSRF token; reload the page and try again".into(),
                )
                .into_response();
            }
        }
        _ => {}
    }
    let _ = auth;
    req.extensions_mut().insert(actor);
    next.run(req).await
}

/// The CSRF token a request carries (header, or the `csrf` field of a form body, which is read
/// and put back).
async fn csrf_of(req: Request) -> Result<(Option<String>, Request), Refused> {
    if let Some(v) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return Ok((Some(v.to_string()), req));
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((None, req));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "form_too_large",
                format!("a form may be at most {MAX_FORM_BYTES} bytes"),
            )
        })?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let csrf = fields
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v);
    Ok((csrf, Request::from_parts(parts, Body::from(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_scopes_follow_method_and_path() {
        assert_eq!(scope_needed(&Method::GET, "/api/alerts"), "read");
        assert_eq!(scope_needed(&Method::POST, "/api/alerts/3/ack"), "alerts");
        assert_eq!(scope_needed(&Method::POST, "/api/roster"), "roster");
        assert_eq!(
            scope_needed(&Method::POST, "/api/residents/R1/topup"),
            "canteen"
        );
        assert_eq!(scope_needed(&Method::DELETE, "/api/anything"), "canteen");
        assert_eq!(
            scope_needed(&Method::POST, "/api/residents/R1/vital-targets"),
            "vitals"
        );
        assert_eq!(scope_needed(&Method::GET, "/api/residents/R1/fhir"), "read");
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::COOKIE, "a=1; eg_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
