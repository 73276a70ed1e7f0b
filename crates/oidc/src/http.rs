//! The HTTP client for discovery and JWKS documents: hyper's pooled client
//! over rustls (ring provider, TLS 1.2 and 1.3, webpki roots plus an optional
//! CA file), with a time limit per request and a size limit per body.
//!
//! It only GETs JSON documents. It follows no redirects (an IdP that
//! redirects its JWKS is misconfigured, and following one would let a
//! redirect pick where keys come from), sends no credentials and keeps no
//! cookies. Which URLs may be fetched is checked before they reach it
//! (`config::check_fetch_url`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

use crate::error::OidcError;

/// Largest discovery or JWKS document read. Real ones are a few KiB; the
/// limit keeps a broken or hostile IdP from filling memory.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("timeout", &self.timeout).finish()
    }
}

impl HttpClient {
    /// Builds the client; reads `ca_file` (if any) but opens no connection.
    pub(crate) fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<HttpClient, OidcError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            let ca_error = |source| OidcError::CaFile {
                path: path.to_owned(),
                source,
            };
            let mut added = 0usize;
            for cert in CertificateDer::pem_file_iter(path).map_err(ca_error)? {
                roots
                    .add(cert.map_err(ca_error)?)
                    .map_err(|source| OidcError::CaCertificate {
                        path: path.to_owned(),
                        source,
                    })?;
                added += 1;
            }
            if added == 0 {
                return Err(OidcError::CaFileEmpty { path: path.to_owned() });
            }
        }
        let tls = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        // The connector also speaks https (through the TLS layer around it).
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(HttpClient { client, timeout })
    }

    /// GETs `url` and returns the body of a 200 answer. The error is a short
    /// description for a log line or an [`OidcError`].
    pub(crate) async fn get(&self, url: &Url) -> Result<Bytes, String> {
        let request = Request::get(url.as_str())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("portcullis-oidc/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| format!("cannot build request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(format!("answered {status}"));
            }
            let announced = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|len| len > MAX_BODY as u64) {
                return Err(format!("document is larger than {MAX_BODY} bytes"));
            }
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("cannot read the document: {}", error_chain(e.as_ref())))?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no complete answer within {:?}", self.timeout))?
    }
}

/// An error with its causes: hyper's own messages ("client error
/// (Connect)") say little without them.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
