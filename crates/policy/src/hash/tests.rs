//! Tests for hashing and the string table: keys that differ in only a few
//! bytes (as generated names do) must still spread, lookups must find exactly
//! the stored keys, and the case-insensitive helpers must agree.

use std::collections::HashSet;

use super::{StrTable, eq_lowercase, hash_bytes, hash_lowercase};

/// A key generator, how many keys to make, and the minimum spread.
type Spread = (fn(usize) -> String, usize, usize);

/// Hashes `count` keys made by `key(i)` and asserts at least `min` distinct
/// values of the low 10 bits (the probe start in a table of 1024 slots).
fn check_spread(key: fn(usize) -> String, count: usize, min: usize) {
    let low: HashSet<u64> = (0..count).map(|i| hash_bytes(key(i).as_bytes()) & 1023).collect();
    assert!(low.len() >= min, "only {} distinct slots", low.len());
}

#[test]
fn spreads_similar_keys() {
    // 200 random values in 1024 slots give ~182 distinct ones.
    let table: &[Spread] = &[
        (|i| format!("team-{i:03}"), 200, 160),
        (|i| format!("{i:08}"), 200, 160),
        (|i| format!("{i}"), 200, 160),
        (|i| format!("okta:team-{i:03}-qualified"), 200, 160),
        (|i| "x".repeat(i), 64, 55),
    ];
    for &(key, count, min) in table {
        check_spread(key, count, min);
    }
}

fn check_table(keys: &[&str], probe: &str, expected: Option<usize>) {
    let table = StrTable::new(keys.iter().enumerate().map(|(i, k)| (Box::from(*k), i)));
    assert_eq!(table.get(probe).copied(), expected, "{probe:?} in {keys:?}");
    let distinct: HashSet<&&str> = keys.iter().collect();
    assert_eq!(table.len(), distinct.len());
}

#[test]
fn table_lookups() {
    let many: Vec<String> = (0..500).map(|i| format!("group-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let table: &[(&[&str], &str, Option<usize>)] = &[
        (&[], "a", None),
        (&[""], "", Some(0)),
        (&["a"], "a", Some(0)),
        (&["a"], "A", None),
        (&["a"], "a ", None),
        (&["a", "b", "c"], "c", Some(2)),
        (&["exactly8", "exactly9!"], "exactly9!", Some(1)),
        (&["exactly8", "exactly9!"], "exactly9?", None),
        (&["dup", "dup"], "dup", Some(0)),
        (&many, "group-0", Some(0)),
        (&many, "group-499", Some(499)),
        (&many, "group-500", None),
    ];
    for &(keys, probe, expected) in table {
        check_table(keys, probe, expected);
    }
}

fn check_lowercase(a: &str, b: &str, equal: bool) {
    assert_eq!(eq_lowercase(a, b), equal, "{a:?} vs {b:?}");
    if equal {
        assert_eq!(hash_lowercase(a), hash_lowercase(b), "hashes of {a:?} and {b:?}");
    }
}

#[test]
fn case_insensitive_helpers() {
    let table: &[(&str, &str, bool)] = &[
        ("Alice@Example.COM", "alice@example.com", true),
        ("alice@example.com", "alice@example.org", false),
        ("ÄBC", "äbc", true),
        // U+212A KELVIN SIGN lower-cases to ASCII 'k': the non-ASCII and the
        // ASCII path must hash alike.
        ("\u{212a}im", "kim", true),
        ("abc", "abcd", false),
        ("", "", true),
        (
            "a-very-long-user-name@example.com",
            "A-VERY-LONG-USER-NAME@EXAMPLE.COM",
            true,
        ),
    ];
    for &(a, b, equal) in table {
        check_lowercase(a, b, equal);
    }
}
