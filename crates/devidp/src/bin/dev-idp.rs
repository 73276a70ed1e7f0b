//! The development OpenID Provider as its own process (development only),
//! used by the proxy benchmark's signed-in legs (`tests/bench/proxy.sh`):
//! Portcullis and Apache mod_auth_openidc sign in against it to get
//! session cookies.
//!
//! `dev-idp ADDR CLIENT_ID CLIENT_SECRET REDIRECT_URI[,REDIRECT_URI...] USER:PASSWORD:EMAIL...`
//!
//! Prints `ISSUER <url>` once it listens, then serves until killed. Loopback
//! only (the provider refuses anything else). Not a test; no state survives
//! it.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_devidp::{DevAccount, DevClient, DevIdp, DevIdpConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, client_id, secret, redirects, users @ ..] = args.as_slice() else {
        eprintln!("usage: dev-idp ADDR CLIENT_ID CLIENT_SECRET REDIRECT_URI[,REDIRECT_URI...] USER:PASSWORD:EMAIL...");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("dev-idp: bad address {addr}: {e}");
        std::process::exit(2);
    });
    let mut redirects = redirects.split(',');
    let mut client = DevClient::confidential(client_id.clone(), secret.clone(), redirects.next().unwrap_or_default());
    for uri in redirects {
        client = client.with_redirect_uri(uri);
    }
    let accounts = users
        .iter()
        .map(|u| match u.splitn(3, ':').collect::<Vec<_>>().as_slice() {
            [user, password, email] => DevAccount::new(*user, *password, *email, *user),
            _ => {
                eprintln!("dev-idp: an account is USER:PASSWORD:EMAIL, not {u}");
                std::process::exit(2);
            }
        })
        .collect();
    let config = DevIdpConfig {
        addr,
        clients: vec![client],
        accounts,
        // Long enough for every round of a benchmark run.
        id_token_ttl: Duration::from_secs(3600),
        access_token_ttl: Duration::from_secs(3600),
        ..DevIdpConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let idp = DevIdp::bind(config).await.unwrap_or_else(|e| {
            eprintln!("dev-idp: {e}");
            std::process::exit(1);
        });
        println!("ISSUER {}", idp.issuer_str());
        idp.run(std::future::pending()).await;
    });
}
