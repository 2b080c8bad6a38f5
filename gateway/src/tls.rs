//! One TLS stack for the whole process: rustls with the aws-lc-rs provider
//! (docs/adr/0012-tls-on-the-central-and-webhook-links.md).
//!
//! Why a process-wide provider: three crates bring rustls here (rumqttc, sqlx, reqwest) and
//! between them both of rustls' providers (aws-lc-rs and ring) are compiled in. With two,
//! rustls cannot pick one by itself and any `ClientConfig::builder()` without an explicit
//! provider panics at the first TLS connection. [`install_crypto_provider`] names aws-lc-rs once,
//! at start, before any connection is made; reqwest and sqlx then use it.

/// Installs aws-lc-rs as the process's rustls provider. Idempotent: a provider already installed
/// (by an earlier call, or a test) is kept.
pub fn install_crypto_provider() {
    // Err means one is already installed, which is all we need.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Why a CA file cannot be used as a trust root.
#[derive(Debug, thiserror::Error)]
#[error("CA file {path}: {reason}")]
pub struct CaFileError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads a PEM bundle into certificates reqwest adds to its trust roots.
pub fn load_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    let fail = |reason: String| CaFileError {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}
