//! TLS material: the server certificate (reloaded without a restart) and
//! the client configuration for https upstreams (custom CA, client
//! certificate for mutual TLS).
//!
//! Only TLS 1.2 and 1.3 are offered, with rustls's `ring` provider. A
//! certificate reload reads both PEM files, checks that the key matches the
//! certificate, and swaps them atomically; handshakes in progress keep the
//! pair they started with, and a bad pair on disk keeps the old one in
//! service (logged and counted) rather than taking the listener down.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            message: format!("bad PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey { path: path.to_owned() })
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::Invalid {
            path: key.to_owned(),
            message: format!("unusable private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Invalid {
        path: key.to_owned(),
        message: format!("key does not match the certificate in {}: {e}", cert.display()),
    })?;
    Ok(certified)
}

/// The server's certificate, swappable while serving.
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// Modification times of the files last loaded, to notice changes.
    stamp: parking_lot::Mutex<Option<(SystemTime, SystemTime)>>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Loads the pair; fails if either file is missing or they do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let stamp = stamps(cert, key);
        let current = certified_key(cert, key)?;
        Ok(Arc::new(ServerCert {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: ArcSwap::from_pointee(current),
            stamp: parking_lot::Mutex::new(stamp),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// Reloads the pair from disk. On error the old pair stays in service.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamps(&self.cert_path, &self.key_path);
        match certified_key(&self.cert_path, &self.key_path) {
            Ok(k) => {
                self.current.store(Arc::new(k));
                *self.stamp.lock() = stamp;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.cert_path.display(), "tls certificate reloaded");
                Ok(())
            }
            Err(e) => {
                // Remember the stamp anyway so a broken pair is reported
                // once, not on every poll; the next write retries.
                *self.stamp.lock() = stamp;
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "tls certificate reload failed; keeping the current one");
                Err(e)
            }
        }
    }

    /// Reloads if either file changed since the last load.
    pub fn reload_if_changed(&self) {
        let now = stamps(&self.cert_path, &self.key_path);
        if now.is_some() && now != *self.stamp.lock() {
            let _ = self.reload();
        }
    }

    /// (successful reloads, failed reloads)
    pub fn stats(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// A rustls server configuration offering h2 and http/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Invalid {
                path: self.cert_path.clone(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Polls the files every `every` and reloads on change, until
    /// `shutdown`. Polling rather than inotify: certificate managers
    /// replace files through symlink swaps that watchers easily miss.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.reload_if_changed(),
                () = &mut shutdown => return,
            }
        }
    }
}

fn stamps(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The client TLS configuration for one https upstream.
pub fn upstream_client_config(
    ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::Invalid {
                    path: path.to_owned(),
                    message: format!("unusable CA certificate: {e}"),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid {
            path: ca.map(Path::to_owned).unwrap_or_default(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    // ALPN is set by the connector from the one protocol the route speaks:
    // an upstream that picked h2 would break WebSocket upgrades.
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Invalid {
                path: key.to_owned(),
                message: format!("unusable client certificate: {e}"),
            })?,
    };
    Ok(config)
}

/// The HTTPS client for Portcullis's own outbound calls (the IdP at sign-in,
/// alert webhooks): webpki roots plus an optional CA file, TLS 1.2 and 1.3,
/// HTTP/1.1, plain `http` allowed (callers decide where that is acceptable),
/// the connect timeout given, idle connections kept a minute.
pub fn outbound_client(ca_file: Option<&Path>, connect_timeout: Duration) -> Result<OutboundClient, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                path: path.to_owned(),
                message: format!("unusable CA certificate: {e}"),
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid {
            path: ca_file.map(Path::to_owned).unwrap_or_default(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    // The connector also speaks https, through the TLS layer around it.
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https),
    )
}

/// See [`outbound_client`].
pub type OutboundClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;
