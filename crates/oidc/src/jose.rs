//! The compact JWS serialization (RFC 7515): splitting a token, decoding its
//! protected header, and the signature algorithms this crate knows.
//!
//! This module only reads the token's shape. It does not pick keys or check
//! signatures (see `jwk`), and it trusts nothing in the header beyond `alg`
//! and `kid`: `jwk`, `jku`, `x5u` and `x5c` are ignored, since a key that a
//! token brings along proves nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::error::VerifyError;

/// The largest token this crate reads. Real access tokens are a few KiB;
/// anything far larger is an attempt to make us decode and hash a lot.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A JWS signature algorithm this crate verifies. The HMAC algorithms and
/// `none` are deliberately absent: a verifier holding only public keys must
/// never accept them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Algorithm {
    /// The algorithm for a JOSE `alg` name, if it is one this crate verifies.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "EdDSA" => Algorithm::EdDsa,
            _ => return None,
        })
    }

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A compact JWS split into its parts; every part borrows from the token.
#[derive(Debug)]
pub(crate) struct Compact<'a> {
    /// `header.payload`: the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

/// The protected header fields this crate reads. Unknown fields are ignored
/// (RFC 7515 allows them) except `crit`, which by definition names fields the
/// verifier must understand: this one understands none.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

impl<'a> Compact<'a> {
    /// Splits the token and reads its header. Refuses `none`, HMAC and
    /// unknown algorithms here, before any key is looked at.
    pub(crate) fn parse(token: &'a str) -> Result<Compact<'a>, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed("token is larger than 16 KiB"));
        }
        let (header, rest) = token
            .split_once('.')
            .ok_or(VerifyError::Malformed("not a compact JWS (header.payload.signature)"))?;
        let (payload, signature) = rest
            .split_once('.')
            .ok_or(VerifyError::Malformed("not a compact JWS (header.payload.signature)"))?;
        if signature.contains('.') {
            // Five parts would be a JWE; more is nothing at all.
            return Err(VerifyError::Malformed("not a compact JWS (header.payload.signature)"));
        }
        if header.is_empty() || payload.is_empty() {
            return Err(VerifyError::Malformed("empty header or payload"));
        }
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let header_json = decode(header).ok_or(VerifyError::Malformed("header is not base64url"))?;
        let header: Header =
            serde_json::from_slice(&header_json).map_err(|_| VerifyError::Malformed("header is not a JWS header"))?;
        if header.crit.is_some() {
            return Err(VerifyError::Malformed(
                "header has critical extensions this verifier does not know",
            ));
        }
        let alg = Algorithm::from_name(&header.alg)
            .ok_or_else(|| VerifyError::UnsupportedAlgorithm(format!("{:?} is not accepted", shorten(&header.alg))))?;
        Ok(Compact {
            signing_input,
            payload,
            signature,
            alg,
            kid: header.kid,
        })
    }
}

/// Decodes unpadded base64url, refusing padding, other alphabets and
/// non-canonical trailing bits (so that one signature has one spelling).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Appends the unpadded base64url encoding of `bytes` to `out`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// The unpadded base64url encoding of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A value taken from a token, cut short for error messages and logs: the
/// sender chose it and could make it arbitrarily long.
pub(crate) fn shorten(value: &str) -> &str {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return value;
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> String {
        encode(json.as_bytes())
    }

    #[test]
    fn splits_and_reads_the_header() {
        let token = format!(
            "{}.{}.c2ln",
            header(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
            encode(b"{}")
        );
        let c = Compact::parse(&token).expect("parses");
        assert_eq!(c.alg, Algorithm::Es256);
        assert_eq!(c.kid.as_deref(), Some("k1"));
        assert_eq!(c.signature, "c2ln");
        assert_eq!(c.signing_input, &token[..token.rfind('.').unwrap()]);
    }

    #[test]
    fn refuses_what_is_not_a_jws() {
        let good_header = header(r#"{"alg":"RS256"}"#);
        let cases = [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{good_header}.e30.sig.x.y"),
            ".e30.sig".to_owned(),
            format!("{good_header}..sig"),
            format!("{}.e30.sig", header("[1]")),
            format!("{}.e30.sig", header(r#"{"kid":"x"}"#)),
            format!("{}.e30.sig", header(r#"{"alg":"RS256","kid":7}"#)),
            format!("{}.e30.sig", header(r#"{"alg":"RS256","crit":["b64"],"b64":false}"#)),
            format!("{good_header}=.e30.sig"),
            format!("{}.e30.sig", good_header.replace('e', "+")),
            format!("{}.e30.{}", good_header, "A".repeat(MAX_TOKEN_LEN)),
        ];
        for token in cases {
            match Compact::parse(&token) {
                Err(VerifyError::Malformed(_)) => {}
                other => panic!("{token:.80}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_none_hmac_and_unknown_algorithms() {
        for alg in ["none", "None", "HS256", "HS384", "HS512", "ES512", "RS1", "", "rs256"] {
            let token = format!("{}.e30.", header(&format!(r#"{{"alg":"{alg}"}}"#)));
            match Compact::parse(&token) {
                Err(VerifyError::UnsupportedAlgorithm(_)) => {}
                other => panic!("{alg}: expected UnsupportedAlgorithm, got {other:?}"),
            }
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        use Algorithm::*;
        for alg in [Rs256, Rs384, Rs512, Ps256, Ps384, Ps512, Es256, Es384, EdDsa] {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        let long = "é".repeat(100);
        assert!(shorten(&long).len() <= 64);
        assert_eq!(shorten("short"), "short");
    }
}
