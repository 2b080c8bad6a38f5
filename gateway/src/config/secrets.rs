//! Secrets from files or the environment, never from a default, never printed.
//!
//! - `broker.password` or `broker.password_file` (e.g. a systemd credential,
//!   `/run/credentials/eldergate.service/broker-password`), or `ELDERGATE__BROKER__PASSWORD`;
//! - `central.password` or `central.password_file` (as written by `eldergate central
//!   add-gateway`), or `ELDERGATE__CENTRAL__PASSWORD`: put into the `postgres://` URL, which
//!   itself then needs no password.
//!
//! A file is read once at load, relative to the config file, its trailing newline dropped. Both a
//! value and a file for one secret is a problem (which one wins would be a guess). Problems name
//! the key and the file, never the secret; [`redact_url`] is what a message may show of a URL.

use super::{problem, Config, Problem};
use std::path::Path;

/// Fills `broker.password` and the central URL's password from their files or values.
pub(super) fn resolve(config: &mut Config, base: &Path, problems: &mut Vec<Problem>) {
    let b = &mut config.broker;
    match (&b.password, &b.password_file) {
        (Some(_), Some(_)) => problems.push(problem(
            "broker.password_file",
            "both broker.password and broker.password_file are set; keep one",
        )),
        (None, Some(f)) => b.password = read(base, f, "broker.password_file", problems),
        _ => {}
    }
    let c = &mut config.central;
    let password = match (&c.password, &c.password_file) {
        (Some(_), Some(_)) => {
            problems.push(problem(
                "central.password_file",
                "both central.password and central.password_file are set; keep one",
            ));
            None
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => read(base, f, "central.password_file", problems),
        (None, None) => None,
    };
    if let Some(pw) = password {
        match with_password(&c.url, &pw) {
            Ok(url) => c.url = url,
            Err(why) => problems.push(problem("central.password", why)),
        }
    }
}

fn read(base: &Path, file: &Path, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let path = base.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim_end_matches(['\n', '\r']).to_string();
            if s.is_empty() {
                problems.push(problem(key, format!("{} is empty", path.display())));
                None
            } else {
                Some(s)
            }
        }
        Err(e) => {
            problems.push(problem(key, format!("cannot read {}: {e}", path.display())));
            None
        }
    }
}

/// `postgres://user@host/db` with `password` put in (percent-encoded).
fn with_password(url: &str, password: &str) -> Result<String, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("a password is set, but central.url is not a postgres:// URL".into());
    };
    if !scheme.starts_with("postgres") {
        return Err("a password is set, but central.url is not a postgres:// URL".into());
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Err("central.url names no user (postgres://USER@host/db) for the password".into());
    };
    let user = &rest[..at];
    if user.contains(':') {
        return Err("central.url already holds a password; remove it from the URL".into());
    }
    let mut encoded = String::new();
    for b in password.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(format!("{scheme}://{user}:{encoded}{}", &rest[at..]))
}

/// What may be shown of a URL: its scheme and host, never its user info.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
            let host = host.split(['/', '?']).next().unwrap_or("");
            format!("{scheme}://…@{host}")
        }
        None => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_goes_into_the_url_percent_encoded() {
        assert_eq!(
            with_password(
                "postgres://gw@db:5432/eldergate?sslmode=verify-full",
                "p@ss/w:rd"
            )
            .unwrap(),
            "postgres://gw:p%40ss%2Fw%3Ard@db:5432/eldergate?sslmode=verify-full"
        );
        assert!(with_password("postgres://gw:old@db/e", "x").is_err());
        assert!(with_password("postgres://db/e", "x").is_err());
        assert!(with_password("sqlite:central.db", "x").is_err());
    }

    #[test]
    fn a_redacted_url_shows_no_user_info() {
        let r = redact_url("postgres://gw:secret@db.example:5432/e");
        assert!(!r.contains("secret") && !r.contains("gw"), "{r}");
        assert_eq!(r, "postgres://…@db.example:5432");
    }
}
