//! Arbitrary bytes through the hand-written JSON parser (`fastjson`) under an arbitrary
//! projection: whenever it gives a value, serde's projected parse must give the same one, to
//! the bit (it may decline anything, and serde then decides).
//!
//! Run with `cd native/fuzz && cargo +nightly fuzz run json_parse -- -max_total_time=60`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_rhai::fastjson::check_against_serde;
use sentinel_rhai::json::Bump;
use sentinel_rhai::projection::Projection;

/// Paths a projection is built from: event fields, nested ones, and keys that need care
/// (empty, non-ASCII, one that is also a prefix of another).
const PATHS: &[&[&str]] = &[
    &["kind"],
    &["ts"],
    &["host", "id"],
    &["proc", "exe"],
    &["proc", "args"],
    &["a"],
    &["a", "b", "c"],
    &["b", "a"],
    &[""],
    &["é"],
    &["ab"],
    &["x", ""],
];

/// The first two bytes choose the projection: whole, or the union of the paths whose bits
/// are set.
fn projection(selector: u8, mask: u16) -> Projection {
    if selector & 1 == 1 {
        return Projection::Whole;
    }
    let mut p = Projection::default();
    for (i, path) in PATHS.iter().enumerate() {
        if mask & (1 << i) != 0 {
            p.add_path(path);
        }
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let (selector, mask, line) = match data {
        [s, m1, m2, rest @ ..] => (*s, u16::from_le_bytes([*m1, *m2]), rest),
        _ => return,
    };
    let projection = projection(selector, mask);
    if let Err(e) = check_against_serde(line, &projection) {
        panic!(
            "{:?} under {projection:?}: {e}",
            String::from_utf8_lossy(line)
        );
    }
    // What the engine calls gives serde's answer whichever parser answered.
    let (ours, serdes) = (Bump::new(), Bump::new());
    let reference = projection.parse_serde(line, &serdes).map_err(|e| e.to_string());
    let parsed = projection.parse(line, &ours).map_err(|e| e.to_string());
    match (&parsed, &reference) {
        (Ok(a), Ok(b)) => assert!(sentinel_rhai::fastjson::identical(a, b, line)),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("{parsed:?} vs {reference:?}"),
    }
});
