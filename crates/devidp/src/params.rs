//! Reading request parameters: query strings and form bodies
//! (`application/x-www-form-urlencoded`), cookies, and HTTP Basic client
//! credentials as OAuth encodes them (RFC 6749 2.3.1).
//!
//! Only parsing: no decisions about what a parameter means. Parsing never
//! panics; a parameter given twice is reported (OAuth forbids repeats) and an
//! empty value counts as absent (RFC 6749 3.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Longest single parameter value accepted (state, nonce, tokens, ...).
const MAX_VALUE_LEN: usize = 8 * 1024;

/// The parameters of one query string or form body.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

/// Why a parameter could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamError {
    Repeated(&'static str),
    TooLong(&'static str),
}

impl ParamError {
    pub(crate) fn describe(&self) -> String {
        match self {
            ParamError::Repeated(name) => format!("parameter {name} given more than once"),
            ParamError::TooLong(name) => format!("parameter {name} is too long"),
        }
    }
}

impl Params {
    /// Parses `a=b&c=d` (percent-decoding, `+` as space; invalid UTF-8 is replaced).
    pub(crate) fn parse(input: &[u8]) -> Params {
        let pairs = url::form_urlencoded::parse(input)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Params { pairs }
    }

    /// The one non-empty value of `name`, if any.
    pub(crate) fn get(&self, name: &'static str) -> Result<Option<&str>, ParamError> {
        let mut found = None;
        for (k, v) in &self.pairs {
            if k == name && !v.is_empty() {
                if found.is_some() {
                    return Err(ParamError::Repeated(name));
                }
                if v.len() > MAX_VALUE_LEN {
                    return Err(ParamError::TooLong(name));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }
}

/// Every value of cookie `name` in the request's `Cookie` headers (a
/// browser may send several cookies of one name, e.g. from two providers on
/// different ports of one host).
pub(crate) fn cookie_values<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
        .collect()
}

/// The client id and secret of an `Authorization: Basic` header, each
/// form-urlencoded before base64 as RFC 6749 2.3.1 asks. `None` if the
/// header is absent; `Some(Err(()))` if it is present but unreadable.
pub(crate) fn basic_credentials(headers: &http::HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    Some(parse_basic(value.as_bytes()))
}

fn parse_basic(value: &[u8]) -> Result<(String, String), ()> {
    let value = std::str::from_utf8(value).map_err(|_| ())?;
    let (scheme, rest) = value.trim().split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(());
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = decoded.split_once(':').ok_or(())?;
    Ok((form_decode(id)?, form_decode(secret)?))
}

/// Decodes one form-urlencoded component (`%XX` and `+`), strictly.
fn form_decode(input: &str) -> Result<String, ()> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(())?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(());
                }
                let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_repeats_and_empties() {
        let p = Params::parse(b"a=1&b=&c=x+y%21&a=2&d=%ZZ");
        assert_eq!(p.get("a"), Err(ParamError::Repeated("a")));
        assert_eq!(p.get("b"), Ok(None));
        assert_eq!(p.get("c"), Ok(Some("x y!")));
        assert_eq!(p.get("missing"), Ok(None));
        assert_eq!(p.get("d"), Ok(Some("%ZZ")));
        let long = format!("s={}", "x".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(Params::parse(long.as_bytes()).get("s"), Err(ParamError::TooLong("s")));
    }

    #[test]
    fn cookies() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1; devidp_session=one".parse().unwrap());
        headers.append(http::header::COOKIE, "devidp_session=two;x=y".parse().unwrap());
        assert_eq!(cookie_values(&headers, "devidp_session"), vec!["one", "two"]);
        assert!(cookie_values(&headers, "nope").is_empty());
    }

    #[test]
    fn basic() {
        let header = format!("Basic {}", STANDARD.encode("my%3Aclient:s%2Bcret+x"));
        assert_eq!(
            parse_basic(header.as_bytes()),
            Ok(("my:client".to_owned(), "s+cret x".to_owned()))
        );
        assert!(parse_basic(b"Bearer abc").is_err());
        assert!(parse_basic(b"Basic !!!").is_err());
        let no_colon = format!("Basic {}", STANDARD.encode("client"));
        assert!(parse_basic(no_colon.as_bytes()).is_err());
        for bad in ["c:%4", "c:%+1", "c:%zz"] {
            let header = format!("Basic {}", STANDARD.encode(bad));
            assert!(parse_basic(header.as_bytes()).is_err(), "{bad}");
        }
        let bad_utf8 = format!("Basic {}", STANDARD.encode("c:%FF"));
        assert!(parse_basic(bad_utf8.as_bytes()).is_err());
    }
}
