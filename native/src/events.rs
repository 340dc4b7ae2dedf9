//! Turning input bytes into events: one JSON event per line, parsed once per batch and
//! shared by every rule that sees it.

use rhai::Dynamic;

use crate::context::EventTime;
use crate::json::{Bump, Json};
use crate::projection::Projection;
use crate::windows::parse_rfc3339_micros;

/// A decoded event: parsed from JSON (borrowing the input), or already a Rhai value (events
/// handed over from Python).
#[derive(Debug)]
pub enum Event<'a> {
    Json(Json<'a>),
    Value(Dynamic),
}

/// One decoded event, or why it could not be decoded.
pub type EventInput<'a> = Result<Event<'a>, String>;

impl Event<'_> {
    pub fn is_map(&self) -> bool {
        match self {
            Event::Json(json) => json.is_map(),
            Event::Value(value) => value.is_map(),
        }
    }

    /// The event as Rhai sees it.
    pub fn into_dynamic(self) -> Dynamic {
        match self {
            Event::Json(json) => json.to_dynamic(),
            Event::Value(value) => value,
        }
    }

    /// Call `f` with the event's `kind` (for the prefilter).
    pub fn with_kind<R>(&self, f: impl FnOnce(Option<&str>) -> R) -> R {
        match self {
            Event::Json(json) => f(match json.get("kind") {
                Some(Json::Str(k)) => Some(k),
                _ => None,
            }),
            Event::Value(value) => {
                let Ok(map) = value.as_map_ref() else {
                    return f(None);
                };
                let kind = map
                    .get("kind")
                    .and_then(|k| k.as_immutable_string_ref().ok());
                f(kind.as_deref().map(|k| k.as_str()))
            }
        }
    }

    /// The event's `ts`, for windows.
    pub fn time(&self) -> EventTime {
        match self {
            Event::Json(json) => match json.get("ts") {
                None => EventTime::Missing,
                Some(Json::Str(text)) => event_time(text),
                Some(_) => EventTime::Invalid,
            },
            Event::Value(value) => {
                let Ok(map) = value.as_map_ref() else {
                    return EventTime::Missing;
                };
                match map.get("ts") {
                    None => EventTime::Missing,
                    Some(ts) => match ts.as_immutable_string_ref() {
                        Ok(text) => event_time(text.as_str()),
                        Err(_) => EventTime::Invalid,
                    },
                }
            }
        }
    }
}

fn event_time(text: &str) -> EventTime {
    parse_rfc3339_micros(text).map_or(EventTime::Invalid, EventTime::At)
}

/// The event lines of newline-delimited JSON, indexed by line number (0-based). Blank
/// lines (only spaces, tabs, CR) are skipped but still count towards the index, so an index
/// always names its line.
pub fn jsonl_lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> + '_ {
    lines(data).enumerate().filter(|(_, line)| !is_blank(line))
}

/// A line holding only JSON whitespace (spaces, tabs, a trailing CR) carries no event.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// The lines of `data` (without their `\n`), found with a vectorized byte search.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b'\n', current) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Parse one JSON document, keeping only what `projection` says some rule can read.
pub fn parse_event<'a>(line: &'a [u8], projection: &Projection, arena: &'a Bump) -> EventInput<'a> {
    projection
        .parse(line, arena)
        .map(Event::Json)
        .map_err(|e| format!("invalid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Result<Dynamic, String> {
        parse_event(line, &Projection::Whole, &Bump::new()).map(Event::into_dynamic)
    }

    fn kind_and_time(event: &Dynamic) -> (Option<String>, EventTime) {
        let value = Event::Value(event.clone());
        let (kind, time) = (value.with_kind(|k| k.map(str::to_string)), value.time());
        let json = serde_json::to_vec(event).expect("serializes");
        let arena = Bump::new();
        let parsed = parse_event(&json, &Projection::Whole, &arena).expect("parses");
        let from_json = (parsed.with_kind(|k| k.map(str::to_string)), parsed.time());
        assert_eq!(from_json, (kind.clone(), time), "both kinds of event agree");
        (kind, time)
    }

    #[test]
    fn blank_lines_are_skipped_but_indexed() {
        let data = b"{\"a\":1}\n\n  \r\n{\"b\":2}\r\n{oops\n";
        let arena = Bump::new();
        let events: Vec<_> = jsonl_lines(data)
            .map(|(index, line)| (index, parse_event(line, &Projection::Whole, &arena)))
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].0, 0);
        assert_eq!(events[1].0, 3);
        assert!(events[1].1.is_ok(), "CRLF line endings are accepted");
        assert_eq!(events[2].0, 4);
        assert!(events[2]
            .1
            .as_ref()
            .is_err_and(|e| e.starts_with("invalid JSON")));
    }

    #[test]
    fn lines_split_like_slice_split() {
        for data in [&b""[..], b"\n", b"a", b"a\n", b"a\nb", b"\n\na\n\n"] {
            let ours: Vec<&[u8]> = lines(data).collect();
            let std: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            assert_eq!(ours, std);
        }
    }

    #[test]
    fn kind_and_time_are_read_alike_from_json_and_rhai_values() {
        let event = parse(br#"{"kind":"proc","ts":"1970-01-01T00:00:01Z"}"#).expect("json");
        let (kind, time) = kind_and_time(&event);
        assert_eq!(kind.as_deref(), Some("proc"));
        assert_eq!(time, EventTime::At(1_000_000));
        let event = parse(br#"{"kind":7,"ts":"yesterday"}"#).expect("json");
        assert_eq!(kind_and_time(&event), (None, EventTime::Invalid));
        let event = parse(br#"{"ts":5}"#).expect("json");
        assert_eq!(kind_and_time(&event), (None, EventTime::Invalid));
    }

    #[test]
    fn big_integers_become_floats() {
        let event = parse(br#"{"n": 18446744073709551615, "i": -5, "f": 1.5}"#).expect("json");
        let map = event.as_map_ref().expect("map");
        assert!(map["n"].is_float());
        assert_eq!(map["i"].as_int(), Ok(-5));
        assert_eq!(map["f"].as_float(), Ok(1.5));
    }
}
