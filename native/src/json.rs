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
                .find(|(k, _)| *k == key)
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
