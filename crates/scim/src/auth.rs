//! SCIM client authentication: each identity provider presents its own
//! bearer token; Portcullis keeps only the token's SHA-256.
//!
//! The presented token is hashed and compared with every configured hash in
//! constant time, and all of them are always compared, so neither the
//! timing nor the order of clients reveals anything about a token. The
//! authenticated client's name is the actor recorded on every change it
//! makes, and the owner that scopes what it may see.

use portcullis_directory::Id;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ScimError;

/// One configured SCIM client.
#[derive(Clone)]
pub struct ClientCredential {
    pub name: Id,
    pub token_sha256: [u8; 32],
    /// Requests per second this client may make (a burst of the same size
    /// is allowed); `None` for no limit.
    pub rate_limit: Option<u32>,
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredential")
            .field("name", &self.name)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

impl ClientCredential {
    /// A credential from the hex SHA-256 given in the configuration.
    pub fn from_hex(name: &str, token_sha256_hex: &str, rate_limit: Option<u32>) -> Result<Self, String> {
        let bytes = hex::decode(token_sha256_hex.trim())
            .map_err(|e| format!("scim client {name}: token_sha256 is not hex: {e}"))?;
        let token_sha256: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("scim client {name}: token_sha256 must be 32 bytes (64 hex digits)"))?;
        Ok(ClientCredential {
            name: Id::from(name),
            token_sha256,
            rate_limit,
        })
    }
}

/// The hex SHA-256 of a token, as written in the configuration.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (256 bits, hex) for `portcullis scim-token`.
pub fn new_token() -> String {
    hex::encode(rand_bytes())
}

fn rand_bytes() -> [u8; 32] {
    // rand's thread RNG is a CSPRNG seeded from the operating system.
    rand::random::<[u8; 32]>()
}

/// Finds the client whose token this `Authorization` header carries.
pub fn authenticate<'c>(
    clients: &'c [ClientCredential],
    authorization: Option<&http::HeaderValue>,
) -> Result<&'c ClientCredential, ScimError> {
    let unauthorized = |detail: &str| ScimError::new(401, None, detail.to_owned());
    let header = authorization.ok_or_else(|| unauthorized("a bearer token is required"))?;
    let header = header
        .to_str()
        .map_err(|_| unauthorized("the authorization header is not valid text"))?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| unauthorized("expected `Authorization: Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("expected `Authorization: Bearer <token>`"));
    }
    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    let mut found = None;
    for client in clients {
        if bool::from(client.token_sha256.ct_eq(&presented)) && found.is_none() {
            found = Some(client);
        }
    }
    found.ok_or_else(|| unauthorized("the bearer token is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Option<&str>, want: Result<&str, &str>) {
        let clients = [
            ClientCredential::from_hex("okta", &token_sha256_hex("okta-secret"), None).expect("okta"),
            ClientCredential::from_hex("entra", &token_sha256_hex("entra-secret"), None).expect("entra"),
        ];
        let value = header.map(|h| http::HeaderValue::from_str(h).expect("header"));
        match (authenticate(&clients, value.as_ref()), want) {
            (Ok(c), Ok(name)) => assert_eq!(&*c.name, name),
            (Err(e), Err(detail)) => {
                assert_eq!(e.status, 401);
                assert!(e.detail.contains(detail), "{header:?}: {e}");
            }
            (got, want) => panic!("{header:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn tokens_identify_their_client() {
        check(Some("Bearer okta-secret"), Ok("okta"));
        check(Some("bearer entra-secret"), Ok("entra"));
        check(Some("BEARER  entra-secret "), Ok("entra"));
        check(Some("Bearer nope"), Err("not valid"));
        check(Some("Basic b2t0YQ=="), Err("Bearer"));
        check(Some("okta-secret"), Err("Bearer"));
        check(None, Err("required"));
    }

    #[test]
    fn config_hashes_are_checked() {
        assert!(ClientCredential::from_hex("x", "zz", None).is_err());
        assert!(ClientCredential::from_hex("x", "abcd", None).is_err());
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token());
        assert_eq!(
            token_sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
