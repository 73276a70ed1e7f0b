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
use openidconnect::{HttpRequest, HttpResponse};

use crate::tls::TlsError;

/// Largest answer read from the IdP.
const MAX_BODY: usize = 1024 * 1024;

/// Why an exchange with the IdP failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

#[derive(Clone)]
pub struct IdpHttp {
    client: crate::tls::OutboundClient,
    timeout: Duration,
}

impl std::fmt::Debug for IdpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpHttp").field("timeout", &self.timeout).finish()
    }
}

impl IdpHttp {
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<IdpHttp, TlsError> {
        let client = crate::tls::outbound_client(ca_file, timeout)?;
        Ok(IdpHttp { client, timeout })
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                HttpError(format!(
                    "request to the identity provider failed: {}",
                    crate::error_chain(&e)
                ))
            })?;
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
