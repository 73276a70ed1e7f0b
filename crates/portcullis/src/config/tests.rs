//! Config parsing: defaults, every documented key, and errors that name
//! file, line, column and key.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("etc/portcullis.toml"), Path::new("/srv/pc"))
}

/// Asserts that `text` fails with exactly these `line:col: key: message`
/// fragments (message compared by `contains`).
fn check_errors(text: &str, want: &[(usize, usize, &str, &str)]) {
    let errs = match parse(text) {
        Ok(c) => panic!("expected errors, parsed {c:?}"),
        Err(e) => e.0,
    };
    let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), want.len(), "{got:#?}");
    for (e, (line, col, key, msg)) in errs.iter().zip(want) {
        assert_eq!((e.line, e.column, e.key.as_str()), (*line, *col, *key), "{got:#?}");
        assert!(e.message.contains(msg), "{:?} does not contain {msg:?}", e.message);
        assert!(
            e.to_string()
                .starts_with(&format!("etc/portcullis.toml:{line}:{col}: ")),
            "{e}"
        );
    }
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let c = parse("").expect("empty config is valid");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.public_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.store.path, Path::new("/srv/pc/./data"));
    assert_eq!(c.policy.dir, Path::new("/srv/pc/policies"));
    assert_eq!(c.scim.path, "/scim/v2");
    assert!(c.scim.clients.is_empty() && c.routes.is_empty());
}

#[test]
fn every_key_is_read() {
    let c = parse(
        r#"
[server]
listen = "0.0.0.0:443"
public_url = "https://access.example.com"
[admin]
listen = "127.0.0.1:9901"
[store]
path = "/var/lib/portcullis"
[policy]
dir = "rules"
[scim]
path = "/provisioning"
[[scim.clients]]
name = "okta"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
[[scim.clients]]
name = "entra"
token_sha256_file = "secrets/entra.sha256"
[[scim.clients]]
name = "keycloak"
token_sha256_env = "KC_SCIM_HASH"
[[routes]]
name = "elasticsearch"
host = "ES.example.com"
path_prefix = "/"
upstream = "https://10.0.0.5:9200"
"#,
    )
    .expect("valid");
    assert_eq!(c.server.listen.port(), 443);
    assert_eq!(c.server.public_url.host_str(), Some("access.example.com"));
    assert_eq!(c.store.path, Path::new("/var/lib/portcullis"));
    assert_eq!(c.policy.dir, Path::new("/srv/pc/rules"));
    assert_eq!(c.scim.path, "/provisioning");
    let sources: Vec<_> = c.scim.clients.iter().map(|c| c.token_sha256.clone()).collect();
    assert!(matches!(sources[0], SecretSource::Inline(_)));
    assert_eq!(sources[1], SecretSource::File("/srv/pc/secrets/entra.sha256".into()));
    assert_eq!(sources[2], SecretSource::Env("KC_SCIM_HASH".into()));
    assert_eq!(c.routes[0].host.as_deref(), Some("es.example.com"));
    assert_eq!(c.routes[0].upstream.port(), Some(9200));
    // Debug output never shows an inline secret.
    assert!(!format!("{c:?}").contains("9f86d08"));
}

#[test]
fn errors_name_file_line_column_and_key() {
    // unknown keys, everywhere, all reported at once
    check_errors(
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n[stor]\npath = \"x\"\n",
        &[
            (3, 1, "server.listen_addr", "unknown key"),
            (4, 2, "stor", "unknown key"),
        ],
    );
    // a value of the wrong shape
    check_errors(
        "[server]\nlisten = \"localhost\"\n",
        &[(2, 10, "server.listen", "invalid socket address")],
    );
    check_errors("[admin]\nlisten = 9090\n", &[(2, 10, "admin.listen", "invalid type")]);
    check_errors(
        "[[routes]]\nname = \"es\"\nupstream = \"not a url\"\n",
        &[(3, 12, "routes[0].upstream", "relative URL without a base")],
    );
    // a missing required key is reported at its table
    check_errors(
        "[[routes]]\nname = \"es\"\n",
        &[(1, 1, "routes[0]", "missing field `upstream`")],
    );
    // semantic checks
    check_errors(
        "[server]\npublic_url = \"ftp://x\"\n",
        &[(2, 14, "server.public_url", "http or https")],
    );
    check_errors(
        "[[routes]]\nname = \"a\"\nupstream = \"http://a\"\n[[routes]]\nname = \"a\"\nupstream = \"unix:/x\"\n",
        &[
            // path_prefix is defaulted, so it is reported at its table
            (4, 1, "routes[1].path_prefix", "same host and path_prefix"),
            (5, 8, "routes[1].name", "duplicate route name"),
            (6, 12, "routes[1].upstream", "http or https"),
        ],
    );
    check_errors(
        "[[scim.clients]]\nname = \"okta\"\n",
        &[(1, 1, "scim.clients[0]", "exactly one of token_sha256")],
    );
    check_errors(
        "[[scim.clients]]\nname = \"okta\"\ntoken_sha256 = \"abc\"\n",
        &[(3, 16, "scim.clients[0].token_sha256", "64 hex digits")],
    );
    check_errors(
        "[[scim.clients]]\nname = \"Okta Prod\"\ntoken_sha256_env = \"X\"\ntoken_sha256_file = \"f\"\n",
        &[
            (2, 8, "scim.clients[0].name", "a-z"),
            (3, 20, "scim.clients[0].token_sha256_env", "exactly one of"),
        ],
    );
    // syntax errors carry a position too
    check_errors("[server\nlisten = 1\n", &[(1, 8, "", "")]);
}

#[test]
fn line_and_column_count_characters() {
    let text = "a\nüü = 1\n";
    assert_eq!(line_col(text, 0), (1, 1));
    assert_eq!(line_col(text, 2), (2, 1));
    assert_eq!(line_col(text, 6), (2, 3)); // after two 2-byte characters
    assert_eq!(line_col(text, 999), (3, 1));
}

#[test]
fn secrets_resolve_from_each_source_without_leaking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("s");
    std::fs::write(&file, "from-file\n").expect("write");
    let env = |k: &str| (k == "SET").then(|| "from-env".to_owned());
    let table: Vec<(SecretSource, Result<&str, &str>)> = vec![
        (SecretSource::Inline("inline".into()), Ok("inline")),
        (SecretSource::File(file), Ok("from-file")),
        (
            SecretSource::File(dir.path().join("missing")),
            Err("cannot read secret file"),
        ),
        (SecretSource::Env("SET".into()), Ok("from-env")),
        (SecretSource::Env("UNSET".into()), Err("UNSET is not set")),
        (SecretSource::Inline("  ".into()), Err("is empty")),
    ];
    for (source, want) in table {
        match (source.resolve(env), want) {
            (Ok(v), Ok(w)) => assert_eq!(v, w),
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
            (got, want) => panic!("{source:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn custom_scim_schemas_are_read_and_checked() {
    let c = parse(
        r#"
[[scim.schemas]]
id = "urn:example:params:scim:schemas:extension:acme:2.0:User"
name = "Acme"
resource = "User"
attributes = [
  { name = "badge", type = "string", required = true },
  { name = "clearance", type = "integer" },
]
"#,
    )
    .expect("valid");
    assert_eq!(c.scim.schemas.len(), 1);
    assert_eq!(c.scim.schemas[0].attributes[1].name, "clearance");
    check_errors(
        "[[scim.schemas]]\nid = \"acme\"\nname = \"Acme\"\nresource = \"User\"\nattributes = []\n",
        &[(1, 1, "scim.schemas", "must be a URN")],
    );
    check_errors(
        "[[scim.schemas]]\nid = \"urn:x:User\"\nname = \"X\"\nresource = \"User\"\nattributes = [{ name = \"a\", type = \"string\", colour = 1 }]\n",
        &[(5, 46, "scim.schemas[0].attributes[0].colour", "unknown field `colour`")],
    );
}

#[test]
fn proxy_keys_are_read_with_their_defaults() {
    let c = parse(
        r#"
[server]
public_url = "https://access.example.com/"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1"]
shutdown_grace = "3s"
[server.tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
[oidc]
issuer = "https://idp.example.com/realms/acme"
audiences = ["portcullis", "es"]
leeway = "1m"
[identity]
claim = "preferred_username"
attribute = "emails"
[assertion]
ttl = "2m"
[[routes]]
name = "es"
upstream = "https://10.0.0.5:9200/base"
upstream_ca = "ca.pem"
upstream_client_cert = "c.pem"
upstream_client_key = "k.pem"
response_timeout = "250ms"
total_timeout = "1h"
max_request_body = 1024
run_as_header = "es-security-runas-user"
assertion_groups = "all"
[routes.headers]
user = "X-Remote-User"
email = ""
assertion = "authorization"
[[routes]]
name = "kibana"
host = "kibana.example.com"
upstream = "http://127.0.0.1:5601"
[routes.credentials]
basic_file = "kibana.secret"
"#,
    )
    .expect("valid");
    let s = &c.server;
    assert_eq!(s.trusted_proxies.len(), 3);
    assert_eq!(s.shutdown_grace, Duration::from_secs(3));
    assert_eq!(s.header_read_timeout, Duration::from_secs(30));
    let tls = s.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, Path::new("/srv/pc/tls/cert.pem"));
    let oidc = c.oidc.as_ref().expect("oidc");
    assert_eq!(oidc.audiences, ["portcullis", "es"]);
    assert_eq!(oidc.leeway, Duration::from_secs(60));
    assert_eq!(c.identity.claim, "preferred_username");
    assert_eq!(c.identity.attribute, portcullis_directory::IdentityAttr::Email);
    assert_eq!(c.assertion.issuer, "https://access.example.com");
    assert_eq!(c.assertion.ttl, Duration::from_secs(120));

    let es = &c.routes[0];
    assert_eq!(es.upstream_ca.as_deref(), Some(Path::new("/srv/pc/ca.pem")));
    assert!(es.upstream_client_cert.is_some());
    assert_eq!(es.response_timeout, Duration::from_millis(250));
    assert_eq!(es.connect_timeout, Duration::from_secs(5));
    assert_eq!(es.total_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(es.max_request_body, Some(1024));
    assert_eq!(es.headers.user.as_ref().map(|h| h.as_str()), Some("x-remote-user"));
    assert_eq!(es.headers.email, None);
    assert_eq!(es.headers.assertion, Some(http::header::AUTHORIZATION));
    assert_eq!(
        es.headers.groups.as_ref().map(|h| h.as_str()),
        Some("x-portcullis-groups")
    );
    assert_eq!(es.assertion_groups, GroupScope::All);
    assert_eq!(es.assertion_audience, "es");
    assert_eq!(
        es.run_as_header.as_ref().map(|h| h.as_str()),
        Some("es-security-runas-user")
    );
    let kibana = &c.routes[1];
    assert_eq!(
        kibana.credentials,
        Some(Credentials::Basic(SecretSource::File("/srv/pc/kibana.secret".into())))
    );
    // A route with only name and upstream equals Route::new.
    assert_eq!(
        kibana,
        &Route {
            credentials: kibana.credentials.clone(),
            host: Some("kibana.example.com".into()),
            ..Route::new("kibana", Url::parse("http://127.0.0.1:5601").expect("url"))
        }
    );
    // Without [oidc] there is no issuer.
    assert!(parse("").expect("empty").oidc.is_none());
}

#[test]
fn proxy_key_errors_are_located() {
    check_errors(
        "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\nshutdown_grace = \"soon\"\n",
        &[
            (2, 20, "server.trusted_proxies[0]", "not an IP address or CIDR"),
            (3, 18, "server.shutdown_grace", "not a duration"),
        ],
    );
    check_errors(
        "[oidc]\nissuer = \"http://idp.example.com\"\naudiences = []\n",
        &[
            (2, 10, "oidc.issuer", "https"),
            (3, 13, "oidc.audiences", "at least one"),
        ],
    );
    check_errors(
        "[identity]\nattribute = \"mail\"\n",
        &[(2, 13, "identity.attribute", "not one of")],
    );
    check_errors(
        "[assertion]\nttl = \"2h\"\n",
        &[(2, 7, "assertion.ttl", "between 10s and 1h")],
    );
    check_errors(
        "[[routes]]\nname = \"a\"\nupstream = \"http://a\"\nupstream_ca = \"ca.pem\"\nupstream_client_cert = \"c\"\n\
         run_as_header = \"x-forwarded-user\"\n[routes.headers]\nuser = \"bad header\"\nroles = \"host\"\n\
         [routes.credentials]\nbasic = \"u:p\"\nbearer = \"t\"\n",
        &[
            (3, 12, "routes[0].upstream", "TLS settings need an https upstream"),
            (5, 24, "routes[0].upstream_client_cert", "needs upstream_client_key"),
            (6, 17, "routes[0].run_as_header", "managed by the proxy"),
            (8, 8, "routes[0].headers.user", "not a valid header name"),
            (9, 9, "routes[0].headers.roles", "managed by the proxy"),
            (10, 1, "routes[0].credentials", "exactly one of basic"),
        ],
    );
    check_errors(
        "[[routes]]\nname = \"a\"\nupstream = \"http://a\"\nforward_authorization = true\n\
         [routes.headers]\nassertion = \"Authorization\"\n",
        &[(4, 25, "routes[0].forward_authorization", "cannot be forwarded")],
    );
}

#[test]
fn header_names_are_kept_once_over_static_text() {
    let a = static_header_name(http::HeaderName::from_bytes(b"X-Team-User").expect("name"));
    let b = static_header_name(http::HeaderName::from_bytes(b"x-team-user").expect("name"));
    assert_eq!(a, "x-team-user");
    assert!(std::ptr::eq(a.as_str(), b.as_str()), "one text for one name");
    let standard = static_header_name(http::header::AUTHORIZATION);
    assert_eq!(standard, http::header::AUTHORIZATION);
}
