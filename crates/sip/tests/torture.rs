//! Runs the torture corpus in tests/torture (RFC 4475 categories, RFC 5118
//! IPv6 cases): valid messages must parse and serialise back byte-exact;
//! invalid ones must fail with the named error kind at the named byte offset,
//! and must never panic.

use bytes::Bytes;
use palisade_sip::{Editor, Message, ParseLimits};

#[test]
fn torture_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let manifest = std::fs::read_to_string(dir.join("MANIFEST")).unwrap();
    let mut n = 0;
    let mut failures = Vec::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (file, expect) = line.split_once(' ').unwrap();
        let data = std::fs::read(dir.join(file)).unwrap();
        let result = Message::parse(Bytes::from(data.clone()), &ParseLimits::default());
        match (expect, result) {
            ("ok", Ok(m)) => {
                // Lossless: with no edits the message serialises to what came in,
                // except a message without Content-Length gains one.
                let out = Editor::new(&m).finish();
                if m.has_header(palisade_sip::HeaderName::ContentLength) {
                    assert_eq!(&out[..], &data[..], "{file}: not byte-exact");
                } else {
                    let again = Message::parse(out, &ParseLimits::default()).unwrap();
                    assert_eq!(again.body(), m.body(), "{file}");
                }
            }
            ("ok", Err(e)) => failures.push(format!("{file}: expected to parse, got {e}")),
            (kind, Ok(_)) => failures.push(format!("{file}: expected {kind}, parsed fine")),
            (expect, Err(e)) => {
                let (kind, offset) = expect
                    .rsplit_once(" @")
                    .unwrap_or_else(|| panic!("{file}: no @offset in MANIFEST"));
                let offset: usize = offset.parse().unwrap();
                let got = format!("{:?}", e.kind);
                if !got.starts_with(kind) {
                    failures.push(format!("{file}: expected {kind}, got {got} ({e})"));
                }
                if e.offset != offset {
                    failures.push(format!(
                        "{file}: expected the error at byte {offset}, got {} ({e})",
                        e.offset
                    ));
                }
                assert!(
                    offset <= data.len(),
                    "{file}: MANIFEST offset beyond message"
                );
            }
        }
        n += 1;
    }
    assert!(
        failures.is_empty(),
        "torture failures:\n{}",
        failures.join("\n")
    );
    assert!(n >= 60, "corpus shrank to {n} cases");
}
