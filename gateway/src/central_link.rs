//! How the gateway reaches the central PostgreSQL: which TLS mode a `central.url` means, and the
//! connection options that carry it out (docs/adr/0012-tls-on-the-central-and-webhook-links.md).
//!
//! Guarantees:
//! - **No plaintext fallback.** `sslmode=prefer` and `sslmode=allow` (libpq's "try TLS, else
//!   plaintext") are refused at `check-config`; every mode we accept either always uses TLS
//!   (`require`, `verify-ca`, `verify-full`) or never does (`disable`, written down, or a loopback
//!   host / Unix socket with no `sslmode`).
//! - A central store on another machine needs TLS or an explicit `sslmode=disable`: a URL to a
//!   remote host without `sslmode` is refused, never silently sent in plaintext.
//! - `central.ca_file` (a PEM bundle, e.g. the district's private CA) is the trust root; with it
//!   and no `sslmode` the mode is `verify-full` (chain and host name checked).
//! - The URL (it may hold a password) is never part of an error message from this module.

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::path::Path;
use std::str::FromStr;

/// Why a `central.url` / `central.ca_file` pair cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CentralLinkError {
    /// Not a URL sqlx can read (the URL itself is left out: it may hold a password).
    #[error("central.url is not a valid postgres:// URL ({0})")]
    BadUrl(String),
    /// `prefer` / `allow`: TLS when the server offers it, plaintext otherwise.
    #[error("sslmode={0} falls back to plaintext when TLS fails; use sslmode=verify-full with central.ca_file (or sslmode=disable to choose plaintext knowingly)")]
    PlaintextFallback(String),
    /// An sslmode libpq does not know.
    #[error("sslmode={0} is not one of disable, require, verify-ca, verify-full")]
    UnknownMode(String),
    /// A remote host and no sslmode.
    #[error("central.url reaches {0} without TLS; add ?sslmode=verify-full and set central.ca_file (or write sslmode=disable to accept plaintext knowingly)")]
    RemoteWithoutTls(String),
    /// `ca_file` with `sslmode=disable`.
    #[error("central.ca_file is set but central.url says sslmode=disable; remove one of them")]
    CaWithoutTls,
    /// `ca_file` cannot be read or holds no certificate.
    #[error("central.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What the policy decided, for logs and `check-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CentralTls {
    /// Not a PostgreSQL URL (the SQLite central store).
    NotPostgres,
    /// Plaintext: written down, or a loopback host / Unix socket without `sslmode`.
    Off,
    /// Encrypted, the server's certificate not checked (`require`).
    Unverified,
    /// Chain checked against the CA, host name not (`verify-ca`).
    VerifyCa,
    /// Chain and host name checked (`verify-full`).
    VerifyFull,
}

/// Reads `url` and `ca_file` into connection options following the policy above.
pub fn pg_options(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<(PgConnectOptions, CentralTls), CentralLinkError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| CentralLinkError::BadUrl(e.to_string()))?;
    let mut explicit = None;
    let mut url_root_cert = false;
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslmode" | "ssl-mode" => explicit = Some(v.to_ascii_lowercase()),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => url_root_cert = true,
            _ => {}
        }
    }
    if let Some(m) = explicit.as_deref() {
        match m {
            "prefer" | "allow" => return Err(CentralLinkError::PlaintextFallback(m.to_string())),
            "disable" | "require" | "verify-ca" | "verify-full" => {}
            other => return Err(CentralLinkError::UnknownMode(other.to_string())),
        }
    }
    let mut opts = PgConnectOptions::from_str(url).map_err(|e| {
        // sqlx's message may quote the URL; keep only its kind.
        let kind = match e {
            sqlx::Error::Configuration(_) => "a query parameter or the host is not understood",
            _ => "cannot be parsed",
        };
        CentralLinkError::BadUrl(kind.into())
    })?;
    let has_ca = ca_file.is_some() || url_root_cert;
    let (mode, tls) = match explicit.as_deref() {
        Some("disable") if has_ca => return Err(CentralLinkError::CaWithoutTls),
        Some("disable") => (PgSslMode::Disable, CentralTls::Off),
        Some("require") => (PgSslMode::Require, CentralTls::Unverified),
        Some("verify-ca") => (PgSslMode::VerifyCa, CentralTls::VerifyCa),
        Some("verify-full") => (PgSslMode::VerifyFull, CentralTls::VerifyFull),
        Some(other) => return Err(CentralLinkError::UnknownMode(other.to_string())),
        None if has_ca => (PgSslMode::VerifyFull, CentralTls::VerifyFull),
        None if is_local(&opts) => (PgSslMode::Disable, CentralTls::Off),
        None => {
            return Err(CentralLinkError::RemoteWithoutTls(
                opts.get_host().to_string(),
            ))
        }
    };
    opts = opts.ssl_mode(mode);
    if let Some(ca) = ca_file {
        check_ca_file(ca)?;
        opts = opts.ssl_root_cert(ca);
    }
    Ok((opts, tls))
}

/// The decision alone, for `check-config` (`NotPostgres` for `sqlite:` URLs).
pub fn check(url: &str, ca_file: Option<&Path>) -> Result<CentralTls, CentralLinkError> {
    if url.starts_with("sqlite:") {
        return Ok(CentralTls::NotPostgres);
    }
    pg_options(url, ca_file).map(|(_, tls)| tls)
}

/// A loopback address, `localhost` or a Unix socket: traffic that never leaves the machine.
fn is_local(opts: &PgConnectOptions) -> bool {
    if opts.get_socket().is_some() || opts.get_host().starts_with('/') {
        return true;
    }
    let host = opts
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_ca_file(path: &Path) -> Result<(), CentralLinkError> {
    let fail = |reason: String| CentralLinkError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(())
}

/// sqlx reports a refused certificate as an I/O error ("invalid peer certificate: …").
fn is_tls_failure(e: &sqlx::Error) -> bool {
    if matches!(e, sqlx::Error::Tls(_)) {
        return true;
    }
    let s = e.to_string();
    s.contains("certificate") || s.contains("TLS") || s.contains("tls handshake")
}

/// An error from reaching the central store, with what to check when it is about TLS. Used in
/// the forwarder's log line, so an operator reading `journalctl` sees the cause and the remedy.
pub fn explain(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Tls(_) | sqlx::Error::Io(_) if is_tls_failure(e) => format!(
            "TLS to the central store failed: {e}; check that central.ca_file is the CA that signed the server's certificate and that the host in central.url is a name in that certificate"
        ),
        sqlx::Error::Database(db) if db.message().contains("no encryption") => format!(
            "{e}; the central store accepts only TLS connections: add sslmode=verify-full and central.ca_file"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str, ca: Option<&Path>) -> Result<CentralTls, CentralLinkError> {
        check(url, ca)
    }

    #[test]
    fn prefer_and_allow_are_refused_as_plaintext_fallbacks() {
        for m in ["prefer", "allow", "PREFER"] {
            let url = format!("postgres://gw@central.example/eg?sslmode={m}");
            assert!(matches!(
                mode(&url, None),
                Err(CentralLinkError::PlaintextFallback(_))
            ));
        }
    }

    #[test]
    fn a_remote_host_without_sslmode_is_refused() {
        assert_eq!(
            mode("postgres://gw:pw@central.example/eg", None),
            Err(CentralLinkError::RemoteWithoutTls("central.example".into()))
        );
    }

    #[test]
    fn loopback_without_sslmode_is_plaintext_and_says_so() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/x",
            "postgres://postgres@localhost/x",
            "postgres://postgres@[::1]:5432/x",
            "postgres:///x?host=/var/run/postgresql",
        ] {
            assert_eq!(mode(url, None), Ok(CentralTls::Off), "{url}");
        }
    }

    #[test]
    fn explicit_modes_are_honoured() {
        let base = "postgres://gw@central.example/eg?sslmode=";
        assert_eq!(mode(&format!("{base}disable"), None), Ok(CentralTls::Off));
        assert_eq!(
            mode(&format!("{base}require"), None),
            Ok(CentralTls::Unverified)
        );
        assert_eq!(
            mode(&format!("{base}verify-ca"), None),
            Ok(CentralTls::VerifyCa)
        );
        assert_eq!(
            mode(&format!("{base}verify-full"), None),
            Ok(CentralTls::VerifyFull)
        );
        assert!(matches!(
            mode(&format!("{base}sometimes"), None),
            Err(CentralLinkError::UnknownMode(_))
        ));
    }

    #[test]
    fn a_ca_file_means_verify_full_and_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let url = "postgres://gw@central.example/eg";
        assert!(matches!(
            mode(url, Some(&ca)),
            Err(CentralLinkError::CaFile { .. })
        ));
        let cert = rcgen::generate_simple_self_signed(vec!["central.example".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        assert_eq!(mode(url, Some(&ca)), Ok(CentralTls::VerifyFull));
        assert_eq!(
            mode(&format!("{url}?sslmode=disable"), Some(&ca)),
            Err(CentralLinkError::CaWithoutTls)
        );
        let missing = dir.path().join("absent.pem");
        assert!(matches!(
            mode(url, Some(&missing)),
            Err(CentralLinkError::CaFile { .. })
        ));
    }

    #[test]
    fn errors_never_quote_the_password() {
        for url in [
            "postgres://gw:s3cret-pw@central.example/eg",
            "postgres://gw:s3cret-pw@central.example/eg?sslmode=prefer",
            "postgres://gw:s3cret-pw@central.example:notaport/eg",
        ] {
            let e = mode(url, None).unwrap_err();
            assert!(!e.to_string().contains("s3cret-pw"), "{e}");
        }
    }
}
