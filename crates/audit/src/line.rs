//! The line format: how one record becomes one JSON line, how a line is
//! hashed, and the few fields read back from a line without trusting it.
//!
//! A line is `{"seq":N,"time":"…","<caller fields>…","prev":"<hex>"}`: the
//! writer's fields first, the caller's [`Fields`] in the order they were
//! added, `prev` last. The format is written by hand rather than by
//! serializing a map so that the field order does not depend on
//! serde_json's `preserve_order` feature. This module does no I/O.

use std::io::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::fields::{PREV, SEQ, TIME};
use crate::record::Fields;

/// The `prev` of the very first record of a chain: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A SHA-256 digest.
pub(crate) type Hash = [u8; 32];

/// RFC 3339, always UTC, always 6 fractional digits, so that the text sorts
/// like the instant.
const TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// The hex SHA-256 of a line's bytes (without its newline): what the next
/// record's `prev` must be.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(hash(line))
}

pub(crate) fn hash(line: &[u8]) -> Hash {
    Sha256::digest(line).into()
}

/// Formats a timestamp the way the writer does (UTC, microseconds).
pub(crate) fn format_time(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    // Formatting a well-formed description into a String only fails for
    // years beyond 9999, which the clock does not produce; fall back to the
    // general RFC 3339 form rather than panic.
    utc.format(TIME_FORMAT)
        .or_else(|_| utc.format(&time::format_description::well_known::Rfc3339))
        .unwrap_or_default()
}

/// One record as a line, without the newline, into `line` (cleared first;
/// the writer reuses one buffer for every record).
pub(crate) fn format_line(line: &mut Vec<u8>, seq: u64, time: &str, fields: &Fields, prev: &Hash) {
    line.clear();
    line.extend_from_slice(b"{\"");
    line.extend_from_slice(SEQ.as_bytes());
    line.extend_from_slice(b"\":");
    // Writing into a Vec cannot fail.
    let _ = write!(line, "{seq}");
    line.extend_from_slice(b",\"");
    line.extend_from_slice(TIME.as_bytes());
    line.extend_from_slice(b"\":");
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *line, time);
    line.extend_from_slice(fields.as_bytes());
    line.extend_from_slice(b",\"");
    line.extend_from_slice(PREV.as_bytes());
    line.extend_from_slice(b"\":\"");
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(prev, &mut hex);
    line.extend_from_slice(&hex);
    line.extend_from_slice(b"\"}");
}

/// Formats the writer's timestamps, redoing the calendar part only when the
/// second changes (a busy proxy writes thousands of records a second).
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// The unix second of `prefix`, and `YYYY-MM-DDTHH:MM:SS` for it.
    second: Option<i64>,
    prefix: String,
    text: String,
}

impl Clock {
    /// The same text as [`format_time`].
    pub(crate) fn format(&mut self, at: OffsetDateTime) -> &str {
        let utc = at.to_offset(time::UtcOffset::UTC);
        let second = utc.unix_timestamp();
        if self.second != Some(second) {
            let full = format_time(utc);
            // `…:SS.ffffffZ`: everything before the dot is per second.
            match full.find('.') {
                Some(dot) if full.len() == dot + 8 => {
                    self.prefix.clear();
                    self.prefix.push_str(&full[..dot]);
                    self.second = Some(second);
                }
                _ => {
                    // Not the usual shape (a year beyond 9999): no caching.
                    self.second = None;
                    self.text = full;
                    return &self.text;
                }
            }
        }
        self.text.clear();
        self.text.push_str(&self.prefix);
        // Writing into a String cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut self.text, format_args!(".{:06}Z", utc.microsecond()));
        &self.text
    }
}

/// The writer fields of a line, parsed without the caller's fields.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) seq: u64,
    pub(crate) prev: String,
}

impl Envelope {
    pub(crate) fn parse(line: &[u8]) -> Result<Envelope, String> {
        let envelope: Envelope =
            serde_json::from_slice(line).map_err(|e| format!("line is not a valid record: {e}"))?;
        if parse_hash(&envelope.prev).is_none() {
            return Err("field prev is not a hex sha-256 digest".to_owned());
        }
        Ok(envelope)
    }
}

/// Parses a 64-digit hex SHA-256 digest.
pub(crate) fn parse_hash(text: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test maps are objects"),
        }
    }

    #[test]
    fn colliding_keys_are_prefixed_until_unique() {
        let fields = map(json!({"seq": 9, "_seq": 8, "time": "t", "prev": "p", "user": "u"}));
        let mut line = Vec::new();
        format_line(&mut line, 1, "now", &Fields::from(fields), &[0; 32]);
        let parsed: Map<String, Value> = serde_json::from_slice(&line).expect("json");
        assert_eq!(parsed["seq"], json!(1));
        assert_eq!(parsed["__seq"], json!(9));
        assert_eq!(parsed["_seq"], json!(8));
        assert_eq!(parsed["_time"], json!("t"));
        assert_eq!(parsed["_prev"], json!("p"));
        assert_eq!(parsed["time"], json!("now"));
        assert_eq!(parsed["prev"], json!(GENESIS_PREV));
        assert_eq!(parsed.len(), 8);
    }

    #[test]
    fn the_clock_formats_as_format_time_does() {
        let mut clock = Clock::default();
        let base = time::macros::datetime!(2025-01-02 03:04:05 UTC);
        for (secs, nanos) in [
            (0, 0),
            (0, 1_000),
            (0, 123_456_789),
            (0, 999_999_999),
            (1, 7_000),
            (61, 0),
            (3600, 50_000),
        ] {
            let at = base + time::Duration::new(secs, nanos);
            assert_eq!(clock.format(at), format_time(at), "{at}");
        }
        let other_zone = time::macros::datetime!(2025-01-02 03:04:05.25 +02:00);
        assert_eq!(clock.format(other_zone), "2025-01-02T01:04:05.250000Z");
    }

    #[test]
    fn time_is_utc_with_microseconds() {
        let at = time::macros::datetime!(2025-01-02 03:04:05.123456789 +02:00);
        assert_eq!(format_time(at), "2025-01-02T01:04:05.123456Z");
        let whole = time::macros::datetime!(2025-01-02 03:04:05 UTC);
        assert_eq!(format_time(whole), "2025-01-02T03:04:05.000000Z");
    }

    #[test]
    fn envelope_rejects_bad_prev() {
        assert!(Envelope::parse(br#"{"seq":1,"prev":"zz"}"#).is_err());
        assert!(Envelope::parse(br#"{"seq":-1,"prev":"00"}"#).is_err());
        let ok = format!(r#"{{"seq":3,"prev":"{GENESIS_PREV}"}}"#);
        assert_eq!(Envelope::parse(ok.as_bytes()).map(|e| e.seq), Ok(3));
    }
}
