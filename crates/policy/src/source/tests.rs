//! Tests for reading policy directories: which files are read, in which
//! order, and how failures are reported.

use std::fs;
use std::path::Path;

use super::read_dir;

/// Creates `files` (path relative to a fresh directory, contents; a path
/// ending in `/` creates a directory) and asserts the file names read.
fn check(files: &[(&str, &str)], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (name, text) in files {
        let path = dir.path().join(name);
        if name.ends_with('/') {
            fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            fs::write(&path, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let sources = read_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = sources
        .iter()
        .map(|s| {
            assert_eq!(s.path.parent(), Some(dir.path()), "paths are joined to the directory");
            let name = s.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let expected_text = files.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
            assert_eq!(Some(s.text.as_str()), expected_text, "text of {name}");
            name.to_owned()
        })
        .collect();
    assert_eq!(names, expected, "files read from {files:?}");
}

/// Files to create and the names expected to be read.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn reads_toml_files_sorted_not_recursively() {
    let table: &[Case<'_>] = &[
        (&[], &[]),
        (
            &[("b.toml", "b"), ("a.toml", "a"), ("c.toml", "c")],
            &["a.toml", "b.toml", "c.toml"],
        ),
        (
            &[("a.toml", "a"), ("notes.md", "x"), ("a.toml.bak", "x"), ("toml", "x")],
            &["a.toml"],
        ),
        (&[(".hidden.toml", "x"), ("visible.toml", "v")], &["visible.toml"]),
        (
            &[
                ("tests/", ""),
                ("tests/case.toml", "x"),
                ("policy.toml", "p"),
                ("dir.toml/", ""),
            ],
            &["policy.toml"],
        ),
    ];
    for (files, expected) in table {
        check(files, expected);
    }
}

#[test]
fn reports_unreadable_inputs() {
    let missing = Path::new("/nonexistent/portcullis-policies");
    let err = read_dir(missing).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.starts_with("/nonexistent/portcullis-policies: cannot read directory: "),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, [0xff, 0xfe]).unwrap_or_else(|e| panic!("{e}"));
    let err = read_dir(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.starts_with(&format!("{}: cannot read file: ", bad.display())),
        "{err}"
    );
}
