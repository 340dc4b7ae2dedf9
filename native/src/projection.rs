//! Which parts of an event the loaded rules can read, so JSON parsing skips the rest.
//!
//! Building Rhai values is most of the cost of an event (every string and map is an
//! allocation, then a free). A rule can only observe the event through the `event`
//! variable; when every use is a plain property chain (`event.proc.exe`, `event.host`,
//! `event.dns.query.len()`), the union of those chains is all any rule can see. Any other
//! use (`event` passed whole, indexed with `[...]`) makes the whole event needed.

use std::fmt;

use rhai::{ASTNode, Expr, AST, FLOAT, INT};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::json::{same_text, Bump, Json};

/// The parts of a value that are needed.
// A projection has a node per wanted map, built at load: their size does not matter, a
// pointer more to follow for every key of every event would.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projection {
    /// The value as it is, all of it.
    Whole,
    /// Only these keys, if the value is a map (anything else is kept whole).
    Fields(Fields),
}

/// The keys wanted at a map, sorted, with what is wanted under each.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    entries: Vec<(String, Projection)>,
    /// Every key of every event is looked up here, so by a table rather than a scan: at
    /// [`bucket`] of a key, 0 (no field there), the field's index + 1, or [`SEVERAL`].
    table: KeyTable,
}

#[derive(Clone, PartialEq, Eq)]
struct KeyTable([u8; 256]);

impl Default for KeyTable {
    fn default() -> Self {
        Self([0; 256])
    }
}

/// More than one field in a bucket (or one past what a byte counts): scan them all.
const SEVERAL: u8 = u8::MAX;

/// Keys are told apart by length and first byte, which differ between most field names.
#[inline(always)]
fn bucket(key: &[u8]) -> usize {
    (key.len() & 15) | (usize::from(key.first().copied().unwrap_or(0)) & 15) << 4
}

impl Fields {
    pub fn entries(&self) -> &[(String, Projection)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What is wanted under `key`, if it is wanted.
    #[inline(always)]
    pub fn get(&self, key: &str) -> Option<&Projection> {
        fn found<'f>((k, p): &'f (String, Projection), key: &str) -> Option<&'f Projection> {
            same_text(k, key).then_some(p)
        }
        match self.table.0[bucket(key.as_bytes())] {
            0 => None,
            SEVERAL => self.entries.iter().find_map(|e| found(e, key)),
            n => found(&self.entries[usize::from(n) - 1], key),
        }
    }

    /// The entry for `key`, added (in order) if missing.
    fn entry_mut(&mut self, key: &str) -> &mut Projection {
        let at = match self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(at) => at,
            Err(at) => {
                self.entries
                    .insert(at, (key.to_string(), Projection::default()));
                self.table = KeyTable::default();
                for (i, (k, _)) in self.entries.iter().enumerate() {
                    let cell = &mut self.table.0[bucket(k.as_bytes())];
                    *cell = match (*cell, u8::try_from(i + 1)) {
                        (0, Ok(n)) if n != SEVERAL => n,
                        _ => SEVERAL,
                    };
                }
                at
            }
        };
        &mut self.entries[at].1
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, p)| (k, p)))
            .finish()
    }
}

impl Default for Projection {
    /// Nothing needed yet: the start of a union.
    fn default() -> Self {
        Self::Fields(Fields::default())
    }
}

impl Projection {
    /// Add a needed path; the empty path means the whole value.
    pub fn add_path(&mut self, path: &[&str]) {
        let Self::Fields(fields) = self else {
            return;
        };
        match path.split_first() {
            None => *self = Self::Whole,
            Some((first, rest)) => fields.entry_mut(first).add_path(rest),
        }
    }

    /// Everything either projection needs.
    pub fn union(&mut self, other: &Projection) {
        match (&mut *self, other) {
            (Self::Whole, _) => {}
            (_, Self::Whole) => *self = Self::Whole,
            (Self::Fields(mine), Self::Fields(theirs)) => {
                for (key, sub) in &theirs.entries {
                    mine.entry_mut(key).union(sub);
                }
            }
        }
    }

    /// What a rule can read of the `event` variable.
    pub fn of_rule(ast: &AST) -> Projection {
        let mut needed = Projection::default();
        ast.walk(&mut |path: &[ASTNode]| {
            let Some(ASTNode::Expr(node @ Expr::Variable(var, ..))) = path.last() else {
                return true;
            };
            if var.1.as_str() != "event" {
                return true;
            }
            let chain = match path.len().checked_sub(2).map(|i| &path[i]) {
                Some(ASTNode::Expr(Expr::Dot(dot, ..))) if std::ptr::eq(&dot.lhs, *node) => {
                    property_chain(&dot.rhs)
                }
                _ => Vec::new(),
            };
            needed.add_path(&chain);
            // Once the whole event is needed nothing can add to it.
            needed != Projection::Whole
        });
        needed
    }

    /// Parse one JSON document, keeping only what is needed, its maps and arrays in `arena`.
    ///
    /// Most lines take the hand-written parser (`fastjson`); whatever it is not sure of
    /// (and every invalid line) is parsed by serde, which so decides every error message.
    pub fn parse<'a>(
        &self,
        json: &'a [u8],
        arena: &'a Bump,
    ) -> Result<Json<'a>, serde_json::Error> {
        match crate::fastjson::parse(json, self, arena) {
            Some(value) => Ok(value),
            None => self.parse_serde(json, arena),
        }
    }

    /// The reference parse, through serde_json: what `parse` gives for every line.
    pub fn parse_serde<'a>(
        &self,
        json: &'a [u8],
        arena: &'a Bump,
    ) -> Result<Json<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let value = ProjectSeed(Some(self), arena).deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

/// The property names after `event` in a chain such as `event.proc.exe.len()`
/// (here `["proc", "exe"]`: the method needs the whole of `exe`).
fn property_chain(expr: &Expr) -> Vec<&str> {
    let mut names = Vec::new();
    let mut at = expr;
    loop {
        match at {
            Expr::Property(prop, ..) => {
                names.push(prop.2.as_str());
                return names;
            }
            Expr::Dot(dot, ..) => match &dot.lhs {
                Expr::Property(prop, ..) => {
                    names.push(prop.2.as_str());
                    at = &dot.rhs;
                }
                _ => return names,
            },
            Expr::Index(index, ..) => {
                if let Expr::Property(prop, ..) = &index.lhs {
                    names.push(prop.2.as_str());
                }
                return names;
            }
            _ => return names,
        }
    }
}

/// Deserializes a value under a projection (`None`: all of it), converting scalars exactly
/// as Rhai's own `Deserialize for Dynamic` does (an integer past `INT` becomes a float);
/// maps, arrays and strings that are not borrowed from the input go into the arena.
struct ProjectSeed<'p, 'a>(Option<&'p Projection>, &'a Bump);

impl<'de: 'a, 'a> DeserializeSeed<'de> for ProjectSeed<'_, 'a> {
    type Value = Json<'a>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'a>, D::Error> {
        let fields = match self.0 {
            Some(Projection::Fields(fields)) => Some(fields),
            Some(Projection::Whole) | None => None,
        };
        deserializer.deserialize_any(ProjectVisitor(fields, self.1))
    }
}

struct ProjectVisitor<'p, 'a>(Option<&'p Fields>, &'a Bump);

impl<'de: 'a, 'a> Visitor<'de> for ProjectVisitor<'_, 'a> {
    type Value = Json<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json<'a>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json<'a>, E> {
        Ok(Json::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json<'a>, E> {
        Ok(INT::try_from(v).map_or(Json::Float(v as FLOAT), Json::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'a>, E> {
        Ok(Json::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Json<'a>, E> {
        Ok(Json::Str(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json<'a>, E> {
        Ok(Json::Str(self.1.alloc_str(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json<'a>, E> {
        Ok(Json::Unit)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'a>, A::Error> {
        // Arrays are kept whole: a projection names map keys only.
        let mut items = bumpalo::collections::Vec::new_in(self.1);
        while let Some(item) = seq.next_element_seed(ProjectSeed(None, self.1))? {
            items.push(item);
        }
        Ok(Json::Array(items.into_bump_slice()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Json<'a>, A::Error> {
        let mut entries = bumpalo::collections::Vec::with_capacity_in(8, self.1);
        while let Some(key) = access.next_key::<Key<'de>>()? {
            let sub = match self.0 {
                None => None,
                Some(fields) => match fields.get(key.as_str()) {
                    Some(sub) => Some(sub),
                    None => {
                        access.next_value::<IgnoredAny>()?;
                        continue;
                    }
                },
            };
            let value = access.next_value_seed(ProjectSeed(sub, self.1))?;
            let key: &'a str = match key {
                Key::Borrowed(s) => s,
                Key::Owned(s) => self.1.alloc_str(&s),
            };
            entries.push((key, value));
        }
        Ok(Json::Map(entries.into_bump_slice()))
    }
}

/// A map key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Key<'de> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use rhai::Dynamic;

    use super::*;

    fn projection_of(source: &str) -> Projection {
        let mut engine = rhai::Engine::new_raw();
        engine.set_strict_variables(true);
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("event", Dynamic::UNIT);
        Projection::of_rule(&engine.compile_with_scope(&scope, source).expect("compiles"))
    }

    fn fields(paths: &[&[&str]]) -> Projection {
        let mut p = Projection::default();
        for path in paths {
            p.add_path(path);
        }
        p
    }

    #[test]
    fn property_chains_are_projected() {
        assert_eq!(
            projection_of(r#"if event.proc.exe == "x" && event.host.id != "" { emit(); }"#),
            fields(&[&["proc", "exe"], &["host", "id"]])
        );
        assert_eq!(
            projection_of("event.proc.keys(); event.dns.query.len(); \"a\" in event.auth"),
            fields(&[&["proc"], &["dns", "query"], &["auth"]])
        );
        assert_eq!(
            projection_of("event?.labels.attack; event.a.b[0].c;"),
            fields(&[&["labels", "attack"], &["a", "b"]])
        );
        assert_eq!(projection_of("let x = 1;"), Projection::default());
    }

    #[test]
    fn whole_event_uses_are_not_projected() {
        for source in [
            "let e = event;",
            r#"event["proc"]"#,
            "emit(#{context: event});",
            "type_of(event)",
            "for x in event.keys() {} f(event); fn f(e) {}",
        ] {
            assert_eq!(projection_of(source), Projection::Whole, "{source}");
        }
    }

    #[test]
    fn field_lookup_finds_exactly_the_wanted_keys() {
        // Keys that share buckets (same length and first byte's low bits), the empty key,
        // and more fields than a byte can index.
        let mut keys: Vec<String> = ["", "a", "q", "aa", "ab", "qa", "proc", "pid", "kind"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        keys.extend((0..300).map(|i| format!("k{i}")));
        for count in [0, 1, 2, 5, 9, 40, keys.len()] {
            let mut p = Projection::default();
            for key in &keys[..count] {
                p.add_path(&[key.as_str()]);
            }
            let Projection::Fields(fields) = &p else {
                panic!("fields");
            };
            assert_eq!(fields.len(), count);
            for (i, key) in keys.iter().enumerate() {
                assert_eq!(fields.get(key).is_some(), i < count, "{key} of {count}");
                for other in ["b", "x", "pro", "proc_", "k300", "é"] {
                    assert!(fields.get(other).is_none(), "{other}");
                }
            }
        }
    }

    #[test]
    fn union_keeps_the_widest_need() {
        let mut p = fields(&[&["proc", "exe"]]);
        p.union(&fields(&[&["proc"], &["host", "id"]]));
        assert_eq!(p, fields(&[&["proc"], &["host", "id"]]));
        p.union(&Projection::Whole);
        assert_eq!(p, Projection::Whole);
    }

    fn parse(p: &Projection, json: &[u8]) -> Result<Dynamic, serde_json::Error> {
        p.parse(json, &Bump::new()).map(|j| j.to_dynamic())
    }

    #[test]
    fn a_whole_parse_gives_what_rhai_deserializes() {
        for json in [
            &br#"{"a": [1, -2, 3.5, "x\u00e9", null, true, {"b": {}}], "c": {"d": "e"}}"#[..],
            br#"{"dup": 1, "dup": "last", "big": 18446744073709551615, "neg": -9223372036854775808}"#,
            br#"{"esc\"aped": "tab\there", "unicode": "\ud83d\ude00", "e": 1e3}"#,
            b"[1, 2]",
            b"\"just a string\"",
            b"12",
        ] {
            let ours = parse(&Projection::Whole, json).expect("valid");
            let rhai: Dynamic = serde_json::from_slice(json).expect("valid");
            assert_eq!(format!("{ours:?}"), format!("{rhai:?}"), "{}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn parse_keeps_only_projected_fields_and_converts_like_rhai() {
        let p = fields(&[
            &["kind"],
            &["proc", "exe"],
            &["proc", "args"],
            &["n"],
            &["big"],
        ]);
        let json = br#"{"kind":"proc","schema":"x","proc":{"exe":"/bin/sh","pid":1,"args":[1,"a",{"b":null}]},"n":-3,"big":18446744073709551615,"skip":{"deep":[1,2,3]}}"#;
        let value = parse(&p, json).expect("valid");
        let full: Dynamic = serde_json::from_slice(json).expect("valid");
        let map = value.as_map_ref().expect("map");
        let full_map = full.as_map_ref().expect("map");
        assert_eq!(map.len(), 4);
        assert!(!map.contains_key("schema") && !map.contains_key("skip"));
        assert_eq!(map["kind"].to_string(), full_map["kind"].to_string());
        assert_eq!(map["n"].as_int(), Ok(-3));
        assert!(map["big"].is_float());
        let proc = map["proc"].as_map_ref().expect("map");
        assert_eq!(proc.len(), 2);
        assert_eq!(
            format!("{:?}", proc["args"]),
            format!("{:?}", full_map["proc"].as_map_ref().expect("map")["args"])
        );
    }

    #[test]
    fn projected_parse_still_rejects_malformed_json() {
        let p = fields(&[&["kind"]]);
        for bad in [
            &b"{"[..],
            b"{\"skip\": [1, }",
            b"{} trailing",
            b"{\"kind\": tru}",
        ] {
            let arena = Bump::new();
            assert!(
                p.parse(bad, &arena).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A projected value that is not a map is kept as it is.
        let p = fields(&[&["proc", "exe"]]);
        let value = parse(&p, br#"{"proc": "just a string"}"#).expect("valid");
        assert!(value.as_map_ref().expect("map")["proc"].is_string());
    }
}
