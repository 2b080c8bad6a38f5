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

/// A reqwest error with its causes: its Display stops at "error sending request", the cause
/// (refused, an unknown issuer, a name the certificate does not hold) is what a person needs.
pub fn describe(e: reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Why the HTTPS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ServerTlsError {
    /// The config key of the file at fault (`http.tls_cert` or `http.tls_key`).
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The rustls server config of the HTTPS listener (`[http] tls_cert`, `tls_key`): HTTP/1.1, the
/// process's provider (aws-lc-rs), TLS 1.2 and 1.3.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<std::sync::Arc<rustls::ServerConfig>, ServerTlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |key: &'static str, path: &std::path::Path, reason: String| ServerTlsError {
        key,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            fail(
                "http.tls_cert",
                cert,
                format!("cannot be read as a PEM certificate chain: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err(fail(
            "http.tls_cert",
            cert,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        fail(
            "http.tls_key",
            key,
            format!("cannot be read as a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("http.tls_cert", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            fail(
                "http.tls_key",
                key,
                format!("does not go with the certificate in http.tls_cert: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}
