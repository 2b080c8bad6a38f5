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

/// The HTTPS listener's certificate and key, replaceable while the gateway runs (a renewed
/// certificate is taken by [`watch_server_cert`] without a restart). Every new TLS handshake
/// gets the current pair; connections already open keep theirs.
#[derive(Debug)]
pub struct ServerCert {
    current: std::sync::RwLock<std::sync::Arc<rustls::sign::CertifiedKey>>,
}

impl ServerCert {
    fn get(&self) -> std::sync::Arc<rustls::sign::CertifiedKey> {
        match self.current.read() {
            Ok(k) => k.clone(),
            // A writer never panics while holding the lock (it only swaps an Arc); take the value.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, key: std::sync::Arc<rustls::sign::CertifiedKey>) {
        match self.current.write() {
            Ok(mut k) => *k = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }
}

fn server_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM certificate chain and its private key and checks that they go together.
pub fn load_server_cert(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, ServerTlsError> {
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
    rustls::sign::CertifiedKey::from_der(chain, private, &server_provider())
        .map(std::sync::Arc::new)
        .map_err(|e| {
            fail(
                "http.tls_key",
                key,
                format!("does not go with the certificate in http.tls_cert: {e}"),
            )
        })
}

/// The rustls server config of the HTTPS listener (`[http] tls_cert`, `tls_key`): HTTP/1.1, the
/// process's provider (aws-lc-rs), TLS 1.2 and 1.3; and the handle through which its
/// certificate is replaced.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<
    (
        std::sync::Arc<rustls::ServerConfig>,
        std::sync::Arc<ServerCert>,
    ),
    ServerTlsError,
> {
    let certified = load_server_cert(cert, key)?;
    let current = std::sync::Arc::new(ServerCert {
        current: std::sync::RwLock::new(certified),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerTlsError {
            key: "http.tls_cert",
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((std::sync::Arc::new(config), current))
}

/// What is looked at to tell that a file was replaced: its modification time and length.
fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Takes a renewed certificate without a restart: every `every`, if `cert` or `key` changed on
/// disk, the pair is read again and, if it is whole and goes together, served to every new
/// connection from then on (logged, `eldergate_tls_reloads_total{result="ok"}`). A pair that
/// cannot be used — half written, mismatched, not PEM — is refused with the reason (logged,
/// `result="refused"`) and the certificate in use stays; it is tried again once either file
/// changes again.
pub async fn watch_server_cert(
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    target: std::sync::Arc<ServerCert>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let stamp = || (file_stamp(&cert), file_stamp(&key));
    let mut seen = stamp();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let now = stamp();
        if now == seen {
            continue;
        }
        seen = now;
        if now.0.is_none() || now.1.is_none() {
            // Being replaced (removed, then written): look again next time.
            continue;
        }
        let (c, k) = (cert.clone(), key.clone());
        let loaded = tokio::task::spawn_blocking(move || load_server_cert(&c, &k)).await;
        match loaded {
            Ok(Ok(certified)) => {
                target.replace(certified);
                metrics::counter!("eldergate_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(cert = %cert.display(), "HTTPS certificate reloaded: new connections get it");
            }
            Ok(Err(e)) => {
                metrics::counter!("eldergate_tls_reloads_total", "result" => "refused")
                    .increment(1);
                tracing::warn!(error = %e, config_key = e.key, "the changed HTTPS certificate or key cannot be used; still serving the one loaded before (tried again when a file changes)");
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the changed HTTPS certificate failed; still serving the one loaded before");
            }
        }
    }
}
