//! The proxy's transport on real sockets: TLS on both sides (certificates
//! made per test), HTTP/2 by ALPN and gRPC trailers over h2, WebSocket
//! upgrades, certificate reload without a restart, oversized headers, and
//! graceful shutdown that lets an in-flight request finish.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_oidc::testing::{Alg, TestIssuer};
use portcullis_tests::pki::Pki;
use portcullis_tests::upstream::Upstream;
use portcullis_tests::{TestServer, http_client};
use serde_json::{Value, json};

const POLICY: &str = r#"
[roles.reader]
allow = [{ route = "app", methods = ["GET", "POST"], paths = ["/**"] }]

[public]
allow = [{ route = "app", paths = ["/public/**", "/slow"] }]

[groups]
"readers" = ["reader"]
"#;

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

/// A client trusting the test CA, offering only h2 or only HTTP/1.1.
fn https_client(pki: &Pki, h2: bool) -> HttpsClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(pki.client_config(&[]))
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn body_json(resp: http::Response<hyper::body::Incoming>) -> Value {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The certificate the server presents, by handshaking once.
async fn presented_cert(pki: &Pki, addr: std::net::SocketAddr) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(&[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("peer certs")[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem").to_vec()
}

#[tokio::test]
async fn tls_both_ways_h2_by_alpn_mutual_tls_and_certificate_reload() {
    let pki = Pki::new("transport");
    let upstream_cert = pki.server("upstream");
    let upstream = Upstream::start_with("tls-app", Some(pki.server_config(&upstream_cert, true, &[b"http/1.1"]))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).expect("ca");
    let (client_cert, client_key) = pki.client("portcullis").write(dir.path(), "client");
    let first = pki.server("proxy-1");
    let (cert, key) = first.write(dir.path(), "proxy");
    let config = format!(
        "[[routes]]\nname = \"app\"\nupstream = \"https://localhost:{port}\"\nupstream_ca = \"{ca}\"\n\
         upstream_client_cert = \"{cc}\"\nupstream_client_key = \"{ck}\"\n\
         [[routes]]\nname = \"nocert\"\nhost = \"nocert.test\"\nupstream = \"https://localhost:{port}\"\nupstream_ca = \"{ca}\"\n",
        port = upstream.addr.port(),
        ca = dir.path().join("ca.pem").display(),
        cc = client_cert.display(),
        ck = client_key.display(),
    );
    let policy = format!("{POLICY}\n[roles.nocert]\nallow = []\n");
    let server = TestServer::start_full(
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        &format!("{config}\n"),
        &[
            ("app.toml", &policy),
            (
                "nocert.toml",
                "[public]\nallow = [{ route = \"nocert\", paths = [\"/**\"] }]\n",
            ),
        ],
    )
    .await;
    let base = format!("https://localhost:{}", server.addr().port());

    // HTTP/2 by ALPN to the proxy, HTTP/1.1 with mutual TLS to the upstream.
    let h2 = https_client(&pki, true);
    let resp = h2
        .request(
            Request::get(format!("{base}/public/a"))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = body_json(resp).await;
    assert_eq!(echo["upstream"], "tls-app");
    assert_eq!(echo["version"], "HTTP/1.1");
    let proto: Vec<&Value> = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == "x-forwarded-proto")
        .collect();
    assert_eq!(proto, [&json!(["x-forwarded-proto", "https"])]);

    let h1 = https_client(&pki, false);
    let resp = h1
        .request(
            Request::get(format!("{base}/public/b"))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("h1 request");
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), StatusCode::OK);

    // Without a client certificate the upstream refuses the handshake.
    let resp = h1
        .request(
            Request::get(format!("{base}/x"))
                .header("host", "nocert.test")
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);

    // A renewed certificate is served without a restart.
    assert_eq!(presented_cert(&pki, server.addr()).await, pem_der(&first.cert_pem));
    let second = pki.server("proxy-2");
    // Make sure the modification time moves even on coarse clocks.
    tokio::time::sleep(Duration::from_millis(20)).await;
    second.write(dir.path(), "proxy");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if presented_cert(&pki, server.addr()).await == pem_der(&second.cert_pem) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken pair on disk keeps the current one in service.
    std::fs::write(&key, "not a key").expect("break key");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(presented_cert(&pki, server.addr()).await, pem_der(&second.cert_pem));
    server.stop().await;
}

#[tokio::test]
async fn websocket_and_grpc_pass_through() {
    let idp = TestIssuer::start().await;
    let app = Upstream::start("app").await;
    let grpc = Upstream::start("grpc").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n\
         [[routes]]\nname = \"app\"\nupstream = \"{}\"\n\
         [[routes]]\nname = \"grpc\"\npath_prefix = \"/grpc\"\nupstream = \"{}\"\nupstream_http2 = true\n",
        idp.issuer(),
        app.url(),
        grpc.url(),
    );
    let grpc_policy = "[public]\nallow = [{ route = \"grpc\", paths = [\"/**\"] }]\n";
    let server = TestServer::start(&config, &[("app.toml", POLICY), ("grpc.toml", grpc_policy)]).await;
    let scim = server.scim(portcullis_tests::OKTA_TOKEN);
    let id = scim.create_user(json!({"userName": "ws@example.com"})).await;
    scim.add_member("readers", &id).await;
    let token = idp.mint(Alg::Es256, json!({"sub": "ws", "email": "ws@example.com"}));

    // WebSocket: upgrade through the proxy, then echo both ways.
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/ws",
        server.addr()
    ))
    .expect("ws request");
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let (mut ws, resp) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        let text = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .expect("send");
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("ok");
        assert_eq!(echo.into_text().expect("text").as_str(), text);
    }
    ws.close(None).await.expect("close");

    // Without a token the upgrade is refused like any request.
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
    let err = tokio_tungstenite::client_async(format!("ws://{}/ws", server.addr()), tcp)
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), StatusCode::UNAUTHORIZED),
        other => panic!("unexpected error {other}"),
    }

    // gRPC: h2 (prior knowledge) to the proxy, h2c to the upstream,
    // trailers carried back.
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let resp = h2
        .request(
            Request::post(format!("http://{}/grpc", server.addr()))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .expect("req"),
        )
        .await
        .expect("grpc request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
}

#[tokio::test]
async fn oversized_headers_get_431_and_shutdown_drains_in_flight_requests() {
    let app = Upstream::start("app").await;
    let config = format!("[[routes]]\nname = \"app\"\nupstream = \"{}\"\n", app.url());
    let server = TestServer::start(&config, &[("app.toml", POLICY)]).await;

    // Raw HTTP/1.1 so the client library does not refuse to send it.
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
    let huge = "a".repeat(1 << 20);
    let req = format!("GET /public/x HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");

    // A slow request in flight when shutdown starts still gets its answer.
    let url = format!("{}/slow?ms=700", server.url);
    let in_flight = tokio::spawn(async move {
        let resp = http_client()
            .request(Request::get(url).body(Full::new(Bytes::new())).expect("req"))
            .await
            .expect("slow request");
        resp.status()
    });
    // Idle connections do not hold shutdown up for the grace period (10 s):
    // one that never sent a byte, one kept alive after a request, and an
    // HTTP/2 one (prior knowledge) after a request.
    let silent = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
    let mut kept = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
    let _ = kept.write_all(b"GET /public/x HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "));
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let resp = h2
        .request(
            Request::get(format!("{}/public/x", server.url))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), http::Version::HTTP_2);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = std::time::Instant::now();
    server.stop().await;
    assert_eq!(in_flight.await.expect("task"), StatusCode::OK);
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?} with idle connections open",
        stopping.elapsed()
    );
    drop((silent, kept, h2));
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open_ws(addr: std::net::SocketAddr, token: &str) -> Ws {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/ws"))
            .expect("ws request");
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("handshake")
        .0
}

/// Whether the socket still echoes.
async fn echoes(ws: &mut Ws) -> bool {
    if ws
        .send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .is_err()
    {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ws.next()).await,
        Ok(Some(Ok(m))) if m.is_text()
    )
}

/// Waits up to `limit` for the socket to be closed by the far end.
async fn closed_within(ws: &mut Ws, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(m))) if m.is_close() => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[tokio::test]
async fn live_connections_end_when_access_is_withdrawn() {
    let idp = TestIssuer::start().await;
    let app = Upstream::start("app").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n[[routes]]\nname = \"app\"\nupstream = \"{}\"\n",
        idp.issuer(),
        app.url(),
    );
    let server = TestServer::start(&config, &[("app.toml", POLICY)]).await;
    let scim = server.scim(portcullis_tests::OKTA_TOKEN);
    let mut ids = Vec::new();
    for user in ["deact@example.com", "moved@example.com", "stays@example.com"] {
        let id = scim.create_user(json!({ "userName": user })).await;
        scim.add_member("readers", &id).await;
        ids.push(id);
    }
    let (deact, moved) = (ids[0].clone(), ids[1].clone());
    let token = |email: &str| idp.mint(Alg::Es256, json!({"sub": email, "email": email}));
    let mut ws_deact = open_ws(server.addr(), &token("deact@example.com")).await;
    let mut ws_moved = open_ws(server.addr(), &token("moved@example.com")).await;
    let mut ws_stays = open_ws(server.addr(), &token("stays@example.com")).await;
    for ws in [&mut ws_deact, &mut ws_moved, &mut ws_stays] {
        assert!(echoes(ws).await);
    }

    // A long download in flight for the user who will be deactivated.
    let download = {
        let url = format!("{}/big?bytes={}", server.url, 1u64 << 40);
        let auth = format!("Bearer {}", token("deact@example.com"));
        let resp = http_client()
            .request(
                Request::get(url)
                    .header("authorization", auth)
                    .body(Full::new(Bytes::new()))
                    .expect("req"),
            )
            .await
            .expect("download starts");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body()
    };
    let reader = tokio::spawn(async move {
        let mut body = download;
        let mut got = 0u64;
        loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len() as u64),
                Some(Err(_)) | None => return got,
            }
        }
    });

    // Deactivation: the socket and the download end within a second.
    scim.set_active(&deact, false).await;
    let started = tokio::time::Instant::now();
    assert!(
        closed_within(&mut ws_deact, Duration::from_secs(1)).await,
        "deactivated user's socket still open"
    );
    let got = tokio::time::timeout(
        Duration::from_secs(1) - started.elapsed().min(Duration::from_millis(900)),
        reader,
    )
    .await
    .expect("the download was cut within a second")
    .expect("reader");
    assert!(got < 1u64 << 40, "the whole download went through");

    // Removal from the group that granted /ws: that user's socket closes,
    // the other member's stays open.
    scim.remove_member("readers", &moved).await;
    assert!(
        closed_within(&mut ws_moved, Duration::from_secs(1)).await,
        "removed member's socket still open"
    );
    assert!(echoes(&mut ws_stays).await, "an unaffected user's socket was closed");

    // A policy reload that no longer grants /ws closes the last socket.
    let narrowed = POLICY.replace(r#"paths = ["/**"] }]"#, r#"paths = ["/data/**"] }]"#);
    assert_ne!(narrowed, POLICY);
    std::fs::write(server.dir().join("policies/app.toml"), narrowed).expect("rewrite policy");
    assert!(
        closed_within(&mut ws_stays, Duration::from_secs(5)).await,
        "a policy reload did not close a socket it no longer allows"
    );
}
