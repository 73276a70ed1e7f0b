//! Test support (feature `testing`): [`TestIssuer`], an in-process OpenID
//! Connect provider that serves discovery and a JWKS over plain HTTP on
//! `127.0.0.1`, and mints tokens, good ones and attacks, with its keys.
//!
//! It is for tests only: its RSA keys are committed test keys
//! (`testdata/`), its HTTP server has no limits, and it panics on misuse.
//!
//! ```no_run
//! # async fn example() {
//! use portcullis_oidc::Verifier;
//! use portcullis_oidc::testing::{Alg, TestIssuer};
//!
//! let idp = TestIssuer::start().await;
//! let verifier = Verifier::new(idp.issuer_config()).unwrap();
//! verifier.refresh().await.unwrap(); // or spawn verifier.run(shutdown)
//! let token = idp.mint(Alg::Es256, serde_json::json!({"sub": "alice"}));
//! assert_eq!(verifier.verify(&token).await.unwrap().subject(), Some("alice"));
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use url::Url;

use crate::config::IssuerConfig;
use crate::jose;

/// The audience [`TestIssuer::mint`] puts in tokens unless told otherwise.
pub const AUDIENCE: &str = "portcullis-test";

/// The RSA keys used in turn by each key generation (committed test keys).
const RSA_KEYS: [&str; 3] = [
    include_str!("../testdata/rsa-1.key.pem"),
    include_str!("../testdata/rsa-2.key.pem"),
    include_str!("../testdata/rsa-3.key.pem"),
];
const RSA_PUBLIC_KEYS: [&str; 3] = [
    include_str!("../testdata/rsa-1.pub.pem"),
    include_str!("../testdata/rsa-2.pub.pem"),
    include_str!("../testdata/rsa-3.pub.pem"),
];
/// Never published: signs tokens whose key the verifier cannot know.
const STRANGER_RSA_KEY: &str = include_str!("../testdata/rsa-4.key.pem");

/// The key types a [`TestIssuer`] signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSA 2048, RS256.
    Rs256,
    /// EC P-256, ES256.
    Es256,
    /// Ed25519, EdDSA.
    EdDsa,
}

impl Alg {
    /// Every key type, for table-driven tests.
    pub const ALL: [Alg; 3] = [Alg::Rs256, Alg::Es256, Alg::EdDsa];

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

enum Signing {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// One key of the test issuer: its signing half and its public JWK.
struct TestKey {
    kid: String,
    signing: Signing,
    jwk: Value,
    /// The SubjectPublicKeyInfo PEM of an RSA key (for the HMAC attack).
    public_pem: Option<&'static str>,
}

impl TestKey {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signing {
            Signing::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .expect("RSA signing");
                signature
            }
            Signing::Ec(key) => key.sign(&rng, message).expect("ECDSA signing").as_ref().to_vec(),
            Signing::Ed(key) => key.sign(message).as_ref().to_vec(),
        }
    }
}

fn rsa_key(pem: &str, kid: String, public_pem: Option<&'static str>) -> TestKey {
    let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("test RSA key PEM") {
        PrivateKeyDer::Pkcs8(der) => der,
        _ => panic!("test RSA keys are PKCS#8"),
    };
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("test RSA key");
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    let jwk = json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": jose::encode(&public.n), "e": jose::encode(&public.e),
    });
    TestKey {
        kid,
        signing: Signing::Rsa(key),
        jwk,
        public_pem,
    }
}

fn ec_key(kid: String) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("EC key generation");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("EC key");
    let point = key.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": jose::encode(&point[1..33]), "y": jose::encode(&point[33..65]),
    });
    TestKey {
        kid,
        signing: Signing::Ec(key),
        jwk,
        public_pem: None,
    }
}

fn ed_key(kid: String) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation");
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
        "x": jose::encode(key.public_key().as_ref()),
    });
    TestKey {
        kid,
        signing: Signing::Ed(key),
        jwk,
        public_pem: None,
    }
}

/// The keys of one generation: one per [`Alg`].
struct KeyRing {
    generation: usize,
    rsa: Arc<TestKey>,
    ec: Arc<TestKey>,
    ed: Arc<TestKey>,
}

impl KeyRing {
    fn new(generation: usize) -> KeyRing {
        let i = generation % RSA_KEYS.len();
        KeyRing {
            generation,
            rsa: Arc::new(rsa_key(
                RSA_KEYS[i],
                format!("rsa-{generation}"),
                Some(RSA_PUBLIC_KEYS[i]),
            )),
            ec: Arc::new(ec_key(format!("ec-{generation}"))),
            ed: Arc::new(ed_key(format!("ed-{generation}"))),
        }
    }

    fn get(&self, alg: Alg) -> Arc<TestKey> {
        Arc::clone(match alg {
            Alg::Rs256 => &self.rsa,
            Alg::Es256 => &self.ec,
            Alg::EdDsa => &self.ed,
        })
    }
}

/// What the server task and the handle share.
struct Shared {
    /// The issuer string as announced and put in tokens (no trailing slash).
    issuer: String,
    keys: Mutex<KeyRing>,
    extra_jwks: Mutex<Vec<Value>>,
    announced_issuer: Mutex<Option<String>>,
    down: AtomicBool,
    delay: Mutex<Duration>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

/// An in-process identity provider on `127.0.0.1`. Dropping it stops the
/// server.
pub struct TestIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestIssuer {
    /// Binds `127.0.0.1:0` and serves `/.well-known/openid-configuration`
    /// and `/jwks` on a tokio task.
    pub async fn start() -> TestIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            keys: Mutex::new(KeyRing::new(0)),
            extra_jwks: Mutex::new(Vec::new()),
            announced_issuer: Mutex::new(None),
            down: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        TestIssuer { shared, addr, server }
    }

    /// `http://127.0.0.1:PORT` (as a [`Url`], which adds a trailing `/`).
    pub fn issuer(&self) -> Url {
        Url::parse(&self.shared.issuer).expect("issuer URL")
    }

    /// `http://127.0.0.1:PORT`, exactly as discovery announces it and tokens
    /// carry it in `iss`.
    pub fn issuer_str(&self) -> &str {
        &self.shared.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A configuration for this issuer with audience [`AUDIENCE`] and the
    /// defaults of [`IssuerConfig::new`], except a 2 s HTTP timeout.
    pub fn issuer_config(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(self.issuer(), vec![AUDIENCE.to_owned()]);
        config.http_timeout = Duration::from_secs(2);
        config
    }

    /// The current `kid` of a key type.
    pub fn kid(&self, alg: Alg) -> String {
        self.shared.keys.lock().get(alg).kid.clone()
    }

    /// A token signed with the current key of `alg`, with its `kid`.
    /// `claims` must be a JSON object; `iss` (this issuer), `aud`
    /// ([`AUDIENCE`]), `iat` (now) and `exp` (now + 5 min) are added unless
    /// present. A claim given as `null` is left out altogether, so
    /// `{"exp": null}` makes a token without `exp`.
    pub fn mint(&self, alg: Alg, claims: Value) -> String {
        let key = self.shared.keys.lock().get(alg);
        let header = json!({"alg": alg.name(), "typ": "JWT", "kid": key.kid});
        self.sign_with(&key, &header, claims)
    }

    /// A token with exactly `header` (nothing added); claims as in
    /// [`mint`](Self::mint). For tokens whose header lies (a wrong `alg`,
    /// another key's `kid`, no `kid`). It is signed with the current key
    /// whose `kid` the header names, else the current key for its `alg`
    /// (`RS*`/`PS*`: RSA, `EdDSA`: Ed25519), else the EC key; to choose the
    /// signing key yourself, use
    /// [`mint_with_header_signed_by`](Self::mint_with_header_signed_by).
    pub fn mint_with_header(&self, header: Value, claims: Value) -> String {
        let signer = {
            let ring = self.shared.keys.lock();
            let by_kid = [Alg::Rs256, Alg::Es256, Alg::EdDsa]
                .into_iter()
                .find(|alg| header.get("kid").and_then(Value::as_str) == Some(ring.get(*alg).kid.as_str()));
            by_kid.unwrap_or(match header.get("alg").and_then(Value::as_str).unwrap_or("") {
                alg if alg.starts_with("RS") || alg.starts_with("PS") => Alg::Rs256,
                "EdDSA" => Alg::EdDsa,
                _ => Alg::Es256,
            })
        };
        self.mint_with_header_signed_by(signer, header, claims)
    }

    /// A token with exactly `header` (nothing added), signed with the
    /// current key of `key`; claims as in [`mint`](Self::mint).
    pub fn mint_with_header_signed_by(&self, key: Alg, header: Value, claims: Value) -> String {
        let key = self.shared.keys.lock().get(key);
        self.sign_with(&key, &header, claims)
    }

    /// A token with exactly `header` and exactly `payload` (which need not
    /// be JSON), signed with the current key of `key`.
    pub fn mint_raw(&self, key: Alg, header: Value, payload: &[u8]) -> String {
        let key = self.shared.keys.lock().get(key);
        let signing_input = format!(
            "{}.{}",
            jose::encode(header.to_string().as_bytes()),
            jose::encode(payload)
        );
        let signature = key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", jose::encode(&signature))
    }

    /// `{"alg":"none"}` and an empty signature.
    pub fn mint_alg_none(&self, claims: Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT"});
        format!("{}.", self.unsigned(&header, claims))
    }

    /// The classic key-confusion attack: `alg` HS256, the current RSA key's
    /// `kid`, and an HMAC-SHA256 made with the RSA *public* key (its PEM
    /// text, as a naive verifier would load it) as the secret.
    pub fn mint_hs256_with_public_key(&self, claims: Value) -> String {
        let key = self.shared.keys.lock().get(Alg::Rs256);
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid});
        let signing_input = self.unsigned(&header, claims);
        let secret = key.public_pem.expect("RSA keys carry their public PEM");
        let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&hmac_key, signing_input.as_bytes());
        format!("{signing_input}.{}", jose::encode(tag.as_ref()))
    }

    /// A token signed with a key this issuer never publishes, under a `kid`
    /// it never used.
    pub fn mint_unknown_kid(&self, alg: Alg, claims: Value) -> String {
        let kid = format!("unknown-{}", alg.name().to_lowercase());
        let key = match alg {
            Alg::Rs256 => rsa_key(STRANGER_RSA_KEY, kid, None),
            Alg::Es256 => ec_key(kid),
            Alg::EdDsa => ed_key(kid),
        };
        let header = json!({"alg": alg.name(), "typ": "JWT", "kid": key.kid});
        self.sign_with(&key, &header, claims)
    }

    /// Makes new keys (new `kid`s) current; the old keys leave the JWKS.
    pub fn rotate(&self) {
        let mut keys = self.shared.keys.lock();
        *keys = KeyRing::new(keys.generation + 1);
    }

    /// While down, discovery and the JWKS answer 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Delays every answer (to test timeouts and concurrent fetches).
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock() = delay;
    }

    /// Makes discovery announce another issuer (`None`: the real one).
    pub fn set_announced_issuer(&self, issuer: Option<&str>) {
        *self.shared.announced_issuer.lock() = issuer.map(str::to_owned);
    }

    /// Publishes an extra JWK verbatim after the real keys (an encryption
    /// key, a broken key, ...).
    pub fn add_raw_jwk(&self, jwk: Value) {
        self.shared.extra_jwks.lock().push(jwk);
    }

    /// JWKS requests received, answered or not.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Discovery requests received, answered or not.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// The JWKS as served now.
    pub fn jwks(&self) -> Value {
        jwks(&self.shared)
    }

    fn unsigned(&self, header: &Value, claims: Value) -> String {
        let Value::Object(mut claims) = claims else {
            panic!("claims must be a JSON object");
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let defaults = [
            ("iss", json!(self.shared.issuer)),
            ("aud", json!(AUDIENCE)),
            ("iat", json!(now)),
            ("exp", json!(now + 300)),
        ];
        for (name, value) in defaults {
            claims.entry(name).or_insert(value);
        }
        claims.retain(|_, v| !v.is_null());
        format!(
            "{}.{}",
            jose::encode(header.to_string().as_bytes()),
            jose::encode(Value::Object(claims).to_string().as_bytes())
        )
    }

    fn sign_with(&self, key: &TestKey, header: &Value, claims: Value) -> String {
        let signing_input = self.unsigned(header, claims);
        let signature = key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", jose::encode(&signature))
    }
}

fn jwks(shared: &Shared) -> Value {
    let mut keys: Vec<Value> = {
        let ring = shared.keys.lock();
        [&ring.rsa, &ring.ec, &ring.ed].iter().map(|k| k.jwk.clone()).collect()
    };
    keys.extend(shared.extra_jwks.lock().iter().cloned());
    json!({ "keys": keys })
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(Arc::clone(&shared), request));
            // A client that hangs up mid-request is not the test's concern.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let counter = match path {
        "/.well-known/openid-configuration" => Some(&shared.discovery_fetches),
        "/jwks" => Some(&shared.jwks_fetches),
        _ => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::SeqCst);
    }
    let delay = *shared.delay.lock();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let respond = |status: StatusCode, body: String| {
        Ok(Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("response"))
    };
    if request.method() != Method::GET || counter.is_none() {
        return respond(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.to_owned());
    }
    if shared.down.load(Ordering::SeqCst) {
        return respond(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"down"}"#.to_owned());
    }
    let body = if path == "/jwks" {
        jwks(&shared)
    } else {
        let issuer = shared
            .announced_issuer
            .lock()
            .clone()
            .unwrap_or_else(|| shared.issuer.clone());
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{}/jwks", shared.issuer),
            "authorization_endpoint": format!("{}/authorize", shared.issuer),
            "token_endpoint": format!("{}/token", shared.issuer),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        })
    };
    respond(StatusCode::OK, body.to_string())
}
