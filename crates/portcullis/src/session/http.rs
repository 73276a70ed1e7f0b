//! The HTTP client `openidconnect` uses to reach the identity provider
//! during browser sign-in: discovery, JWKS, the token endpoint.
//!
//! hyper's pooled client over rustls (webpki roots plus `[oidc] ca_file`),
//! with a time limit per exchange and a size limit per body. It follows no
//! redirects (following one would let a redirect choose where keys and
//! tokens come from) and keeps no cookies.
//!
//! What it does not do: retries (the caller knows which requests are safe
//! to repeat), or log bodies (they carry codes and tokens).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openidconnect::{HttpRequest, HttpResponse};

use crate::tls::{TlsError, load_certs, provider};

/// Largest answer read from the IdP.
const MAX_BODY: usize = 1024 * 1024;

/// Why an exchange with the IdP failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

#[derive(Clone)]
pub struct IdpHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for IdpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpHttp").field("timeout", &self.timeout).finish()
    }
}

impl IdpHttp {
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<IdpHttp, TlsError> {
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
        let mut http = HttpConnector::new();
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
        Ok(IdpHttp { client, timeout })
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError(format!("request to the identity provider failed: {}", chain(&e))))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpError(format!("cannot read the identity provider's answer: {e}")))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| {
            HttpError(format!(
                "the identity provider did not answer within {:?}",
                self.timeout
            ))
        })?
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for IdpHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.exchange(request))
    }
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
