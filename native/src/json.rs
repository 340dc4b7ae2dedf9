//! A parsed event that borrows its strings from the input line.
//!
//! Most events are decided by the rules' native fast paths (`fastpath.rs`) without running
//! Rhai, so they never need Rhai values: building those (an allocation per string and per map
//! node, then a free) was most of the cost of parsing. An event is parsed into this form
//! once; it becomes a Rhai value (`to_dynamic`) only when some rule has to be interpreted.
//!
//! Maps, arrays and the strings that had escapes live in an arena ([`Bump`]) that the
//! engine reuses batch after batch: a tree of `Vec`s cost an allocation per map and a walk
//! over every entry to free it (together about a seventh of an event's cost).

use rhai::{Array, Dynamic, Map, FLOAT, INT};

pub use bumpalo::Bump;

/// A JSON value; map entries keep the input's order (the last of duplicate keys wins, as
/// when inserting them into a Rhai map one by one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Json<'a> {
    Unit,
    Bool(bool),
    Int(INT),
    Float(FLOAT),
    Str(&'a str),
    Array(&'a [Json<'a>]),
    Map(&'a [(&'a str, Json<'a>)]),
}

impl<'a> Json<'a> {
    /// The value under `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&'a Json<'a>> {
        match self {
            Json::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| same_text(k, key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self, Json::Map(_))
    }

    /// The same value as Rhai's own `Deserialize for Dynamic` gives for this JSON.
    pub fn to_dynamic(&self) -> Dynamic {
        match self {
            Json::Unit => Dynamic::UNIT,
            Json::Bool(b) => Dynamic::from_bool(*b),
            Json::Int(i) => Dynamic::from_int(*i),
            Json::Float(f) => Dynamic::from_float(*f),
            Json::Str(s) => (*s).into(),
            Json::Array(items) => {
                Dynamic::from_array(items.iter().map(Json::to_dynamic).collect::<Array>())
            }
            Json::Map(entries) => {
                let mut map = Map::new();
                for (key, value) in *entries {
                    map.insert((*key).into(), value.to_dynamic());
                }
                Dynamic::from_map(map)
            }
        }
    }
}

/// `a == b` for the short strings rules compare (keys, actions, paths), without a call to
/// `memcmp`: the lengths first, then two overlapping loads from each side for up to 16
/// bytes. The calls were about 3% of an event's instructions.
#[inline(always)]
pub fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::same_text;

    #[test]
    fn same_text_is_string_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abce",
            "exec",
            "exed",
            "connect",
            "connecu",
            "create",
            "/usr/bin/",
            "/usr/bin/x",
            "/usr/bin/y",
            "0123456789abcdef",
            "0123456789abcdeg",
            "1123456789abcdef",
            "0123456789abcdefg",
            "0123456789abcdefh",
            "é",
            "éa",
        ];
        for a in words {
            for b in words {
                assert_eq!(same_text(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
        // Every length up to 40, differing at every position.
        let base: String = (0..40).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(same_text(a, a));
            for at in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[at] = b'#';
                let b = String::from_utf8(b).expect("ascii");
                assert!(!same_text(a, &b), "{a:?} vs {b:?}");
            }
        }
    }
}
