//! The admin listener: `/healthz` (the process is up) and `/readyz` (it can
//! serve: the store is open and healthy). Metrics join it later.
//!
//! Keep this listener on a private address; it is not authenticated.

use std::convert::Infallible;
use std::future::Ready;

use http::StatusCode;
use hyper::body::Incoming;
use hyper::{Request, Response};
use portcullis_directory::{Directory, Health};
use serde_json::json;

use crate::web::{Body, json};

/// The admin service.
#[derive(Debug, Clone)]
pub struct Admin {
    directory: Directory,
}

impl Admin {
    pub fn new(directory: Directory) -> Self {
        Admin { directory }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => json(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => match self.directory.health() {
                Health::Ok => json(StatusCode::OK, &json!({"status": "ready", "store": "ok"})),
                Health::Failed(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "not ready", "store": format!("failed: {reason}")}),
                ),
            },
            _ => json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Admin {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(self.respond(&req)))
    }
}
