//! One catalogue of error codes: `docs/errors.md` is generated from `runnel_server::codes`,
//! every code the server, runtime and envelope can produce is in it, and nothing in it is
//! stale. `RUNNEL_BLESS=1 cargo test -p runnel-server-tests --test error_codes` rewrites the doc.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;
use runnel_server::codes::{ERROR_CODES, is_known, markdown};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The body of `fn code` in a file: the match that maps an error to its code.
fn code_fn_literals(path: &Path) -> BTreeSet<String> {
    let text = read(path);
    let start = text.find("pub fn code(&self)").expect("a code fn");
    let body = &text[start..];
    let end = body.find("\n    }\n").expect("the end of the code fn");
    let literal = Regex::new(r#""([a-z_]+\.[a-z0-9_]+)""#).unwrap();
    literal
        .captures_iter(&body[..end])
        .map(|c| c[1].to_string())
        .collect()
}

/// Every `"word.word"` literal of the server's code: codes, and the few event types its
/// OpenAPI examples name and certificate file names (which are not errors, so are left out).
fn server_literals() -> BTreeSet<String> {
    const EXAMPLES: &[&str] = &["order.placed", "order.shipped", "payment.charged"];
    let constructor = Regex::new(r#""([a-z_]+\.[a-z0-9_]+)""#).unwrap();
    let mut files = Vec::new();
    rust_files(&workspace().join("crates/runnel-server/src"), &mut files);
    files
        .iter()
        // The catalogue itself, and test helpers (which name files such as `cert.pem`).
        .filter(|f| !f.ends_with("codes.rs") && !f.ends_with("test_certs.rs"))
        .flat_map(|f| {
            constructor
                .captures_iter(&read(f))
                .map(|c| c[1].to_string())
                .filter(|c| !EXAMPLES.contains(&c.as_str()) && !c.ends_with(".pem"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn docs_errors_md_is_the_catalogue() {
    let path = workspace().join("docs/errors.md");
    let expected = markdown();
    if std::env::var_os("RUNNEL_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    assert_eq!(
        read(&path),
        expected,
        "docs/errors.md is out of date: RUNNEL_BLESS=1 cargo test -p runnel-server-tests --test error_codes"
    );
}

#[test]
fn every_code_the_api_can_answer_is_in_the_catalogue_and_none_is_stale() {
    let mut produced = server_literals();
    produced.extend(code_fn_literals(
        &workspace().join("crates/runnel-runtime/src/error.rs"),
    ));
    produced.extend(code_fn_literals(
        &workspace().join("crates/runnel-envelope/src/error.rs"),
    ));
    let unknown: Vec<&String> = produced.iter().filter(|c| !is_known(c)).collect();
    assert!(
        unknown.is_empty(),
        "codes missing from the catalogue: {unknown:?}"
    );
    let stale: Vec<&str> = ERROR_CODES
        .iter()
        .map(|c| c.code)
        .filter(|c| !produced.contains(*c))
        .collect();
    assert!(
        stale.is_empty(),
        "catalogued codes nothing produces: {stale:?}"
    );
    let mut seen = BTreeSet::new();
    for c in ERROR_CODES {
        assert!(seen.insert(c.code), "`{}` is catalogued twice", c.code);
    }
}
