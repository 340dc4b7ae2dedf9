//! Event-time sliding windows, per rule and key, bounded in memory.
//!
//! Time is the event's own `ts` (RFC 3339), never the wall clock, so replaying a day of
//! events gives the same counts as seeing them live.

use std::collections::VecDeque;

use crate::hashing::{FastMap, FastSet};

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Parse an RFC 3339 timestamp (`2026-12-03T08:00:00.123456Z`, `...+02:00`) into
/// microseconds since the Unix epoch. Digits past microseconds are truncated.
pub fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    let separators_ok = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !separators_ok
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_seconds = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let hours = num(i + 1, 2)?;
            let minutes = num(i + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * MICROS_PER_SECOND + micros)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Convert a window length in seconds to microseconds; rejects non-positive lengths.
pub fn window_micros(seconds: f64) -> Result<i64, String> {
    if seconds.is_finite() && seconds > 0.0 {
        // Saturating: a window of centuries is simply "everything kept".
        Ok((seconds * MICROS_PER_SECOND as f64).min(i64::MAX as f64) as i64)
    } else {
        Err(format!(
            "window length must be a positive number of seconds, not {seconds}"
        ))
    }
}

/// Whether a key holds plain records (`window_push`) or values (`window_distinct`).
/// The two never mix, even under the same key string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum WindowKind {
    Count,
    Distinct,
}

#[derive(Default, Debug)]
struct Series {
    /// (event time in microseconds, value for distinct windows), sorted by time so that
    /// a window is a contiguous range found by binary search. Events usually arrive in
    /// time order, which makes insertion a push at the back.
    records: VecDeque<(i64, Option<String>)>,
}

impl Series {
    fn insert(&mut self, now: i64, value: Option<String>, max_entries: usize) {
        let at = self.records.partition_point(|(t, _)| *t <= now);
        self.records.insert(at, (now, value));
        while self.records.len() > max_entries.max(1) {
            self.records.pop_front();
        }
    }

    /// Index range of the records with time in `(now - span, now]`.
    fn window(&self, now: i64, span: i64) -> std::ops::Range<usize> {
        let start = now.saturating_sub(span);
        let lo = self.records.partition_point(|(t, _)| *t <= start);
        let hi = self.records.partition_point(|(t, _)| *t <= now);
        lo..hi.max(lo)
    }
}

/// All windows of one rule.
#[derive(Default, Debug)]
pub struct RuleWindows {
    counts: FastMap<String, Series>,
    distincts: FastMap<String, Series>,
    /// Keys by first use, for evicting the oldest key beyond the key limit.
    key_order: VecDeque<(WindowKind, String)>,
}

/// Bounds for one rule's windows (from its [`crate::limits::Limits`]).
#[derive(Clone, Copy, Debug)]
pub struct WindowBounds {
    pub max_keys: usize,
    pub max_entries_per_key: usize,
}

impl RuleWindows {
    /// Record the current event (time `now`) under `key`.
    pub fn push(&mut self, key: &str, now: i64, bounds: WindowBounds) {
        self.series_for(WindowKind::Count, key, bounds).insert(
            now,
            None,
            bounds.max_entries_per_key,
        );
    }

    /// Records under `key` with time in `(now - span, now]`.
    pub fn count(&self, key: &str, now: i64, span: i64) -> usize {
        self.counts
            .get(key)
            .map_or(0, |series| series.window(now, span).len())
    }

    /// Record `value` under `key` at `now`, then count distinct values in `(now - span, now]`.
    pub fn distinct(
        &mut self,
        key: &str,
        value: &str,
        now: i64,
        span: i64,
        bounds: WindowBounds,
    ) -> usize {
        let series = self.series_for(WindowKind::Distinct, key, bounds);
        series.insert(now, Some(value.to_owned()), bounds.max_entries_per_key);
        let range = series.window(now, span);
        let distinct: FastSet<&str> = series
            .records
            .range(range)
            .filter_map(|(_, v)| v.as_deref())
            .collect();
        distinct.len()
    }

    /// Number of keys currently held (both kinds).
    pub fn keys(&self) -> usize {
        self.counts.len() + self.distincts.len()
    }

    fn map(&mut self, kind: WindowKind) -> &mut FastMap<String, Series> {
        match kind {
            WindowKind::Count => &mut self.counts,
            WindowKind::Distinct => &mut self.distincts,
        }
    }

    /// The series for `key`, created (evicting the oldest key if full) when new.
    fn series_for(&mut self, kind: WindowKind, key: &str, bounds: WindowBounds) -> &mut Series {
        if !self.map(kind).contains_key(key) {
            while self.keys() >= bounds.max_keys.max(1) {
                let Some((oldest_kind, oldest)) = self.key_order.pop_front() else {
                    break;
                };
                self.map(oldest_kind).remove(&oldest);
            }
            self.key_order.push_back((kind, key.to_owned()));
        }
        self.map(kind).entry(key.to_owned()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = MICROS_PER_SECOND;
    const BOUNDS: WindowBounds = WindowBounds {
        max_keys: 100,
        max_entries_per_key: 100,
    };

    #[test]
    fn rfc3339_utc_and_fraction() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("1970-01-01T00:00:01.5Z"),
            Some(1_500_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2026-12-03T08:00:00.123456Z"),
            Some(1_796_284_800 * S + 123_456)
        );
        assert_eq!(
            parse_rfc3339_micros("2026-12-03T08:00:00.123456789Z"),
            Some(1_796_284_800 * S + 123_456)
        );
    }

    #[test]
    fn rfc3339_offsets() {
        assert_eq!(
            parse_rfc3339_micros("2026-12-03T10:00:00+02:00"),
            parse_rfc3339_micros("2026-12-03T08:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_micros("2026-12-03T05:30:00-02:30"),
            parse_rfc3339_micros("2026-12-03T08:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_micros("2024-02-29T00:00:00Z"),
            Some(1_709_164_800 * S)
        );
    }

    #[test]
    fn rfc3339_rejects_malformed() {
        for bad in [
            "",
            "2026-12-03",
            "2026-12-03T08:00:00",
            "2026-13-03T08:00:00Z",
            "2026-02-30T08:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T08:00:00.Z",
            "2026-12-03T08:00:00+0200",
            "2026-12-03T08:00:00Zjunk",
            "2026/12/03T08:00:00Z",
            "２０２６-12-03T08:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn count_is_half_open_by_event_time() {
        let mut w = RuleWindows::default();
        for t in [0, 10, 20, 30] {
            w.push("h1", t * S, BOUNDS);
        }
        assert_eq!(w.count("h1", 30 * S, 30 * S), 3, "(0, 30] excludes t=0");
        assert_eq!(w.count("h1", 30 * S, 31 * S), 4);
        assert_eq!(
            w.count("h1", 20 * S, 100 * S),
            3,
            "records after now excluded"
        );
        assert_eq!(w.count("other", 30 * S, 100 * S), 0);
    }

    #[test]
    fn out_of_order_events_are_placed_by_time() {
        let mut w = RuleWindows::default();
        for t in [50, 10, 30, 20, 40] {
            w.push("k", t * S, BOUNDS);
        }
        assert_eq!(w.count("k", 30 * S, 15 * S), 2, "20 and 30");
        assert_eq!(w.count("k", 50 * S, 100 * S), 5);
        assert_eq!(w.distinct("d", "x", 50 * S, 10 * S, BOUNDS), 1);
        assert_eq!(
            w.distinct("d", "y", 10 * S, 10 * S, BOUNDS),
            1,
            "x at 50 is in the future"
        );
        assert_eq!(w.distinct("d", "z", 55 * S, 10 * S, BOUNDS), 2, "x and z");
    }

    #[test]
    fn eviction_drops_the_oldest_by_event_time() {
        let bounds = WindowBounds {
            max_keys: 10,
            max_entries_per_key: 2,
        };
        let mut w = RuleWindows::default();
        for t in [30, 10, 20] {
            w.push("k", t * S, bounds);
        }
        assert_eq!(
            w.count("k", 30 * S, 15 * S),
            2,
            "10 evicted, 20 and 30 kept"
        );
    }

    #[test]
    fn distinct_counts_values_including_current() {
        let mut w = RuleWindows::default();
        assert_eq!(w.distinct("u", "a", 0, 60 * S, BOUNDS), 1);
        assert_eq!(w.distinct("u", "a", S, 60 * S, BOUNDS), 1);
        assert_eq!(w.distinct("u", "b", 2 * S, 60 * S, BOUNDS), 2);
        assert_eq!(w.distinct("u", "c", 100 * S, 60 * S, BOUNDS), 1);
        assert_eq!(w.count("u", 100 * S, 1000 * S), 0, "kinds do not mix");
    }

    #[test]
    fn entries_and_keys_are_bounded_oldest_first() {
        let bounds = WindowBounds {
            max_keys: 2,
            max_entries_per_key: 3,
        };
        let mut w = RuleWindows::default();
        for t in 0..10 {
            w.push("a", t * S, bounds);
        }
        assert_eq!(w.count("a", 9 * S, 100 * S), 3);
        w.push("b", 10 * S, bounds);
        w.push("c", 11 * S, bounds);
        assert_eq!(w.keys(), 2);
        assert_eq!(w.count("a", 11 * S, 100 * S), 0, "oldest key evicted");
        assert_eq!(w.count("b", 11 * S, 100 * S), 1);
        assert_eq!(w.count("c", 11 * S, 100 * S), 1);
    }

    #[test]
    fn window_length_must_be_positive() {
        assert_eq!(window_micros(1.5), Ok(1_500_000));
        assert!(window_micros(0.0).is_err());
        assert!(window_micros(-1.0).is_err());
        assert!(window_micros(f64::NAN).is_err());
        assert_eq!(window_micros(1e300), Ok(i64::MAX));
    }
}
