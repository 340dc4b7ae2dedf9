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

/// `a == b` for the short strings rules and projections compare (keys, actions, paths),
/// without a call to `memcmp`/`bcmp` for each: the lengths first, then two overlapping
/// loads from each side for up to 16 bytes (or three bytes). The calls were about 3% of an
/// event's instructions.
#[inline(always)]
pub fn same_text(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    // The first and the last `N` bytes of `s`, which has at least `N`.
    fn ends<const N: usize>(s: &[u8]) -> (&[u8; N], &[u8; N]) {
        let first = s.first_chunk().expect("long enough");
        let last = s.last_chunk().expect("long enough");
        (first, last)
    }
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        0 => true,
        1..=3 => {
            a[0] == b[0] && a[a.len() / 2] == b[a.len() / 2] && a[a.len() - 1] == b[a.len() - 1]
        }
        4..=8 => {
            let word = |s| {
                let (first, last) = ends::<4>(s);
                u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32
            };
            word(a) == word(b)
        }
        9..=16 => {
            let words = |s| {
                let (first, last) = ends::<8>(s);
                (u64::from_le_bytes(*first), u64::from_le_bytes(*last))
            };
            words(a) == words(b)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::{same_bytes, same_text};

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

    #[test]
    fn keys_are_compared_byte_for_byte() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..50_000 {
            let len = (next() % 24) as usize;
            let a: Vec<u8> = (0..len).map(|_| b"ab"[(next() % 2) as usize]).collect();
            let mut b = a.clone();
            match next() % 3 {
                0 if len > 0 => {
                    let at = (next() % len as u64) as usize;
                    b[at] ^= 1 << (next() % 8);
                }
                1 => b.push(b'a'),
                _ => {}
            }
            assert_eq!(same_bytes(&a, &b), a == b, "{a:?} {b:?}");
        }
    }
}
