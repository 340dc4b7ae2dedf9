//! Pure matching helpers behind the script API: glob, regular expressions, CIDR, entropy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};

use crate::hashing::FastMap;

/// Compiled-program (and lazy-DFA cache) size cap for one pattern; keeps `re_match` linear
/// and bounded in memory. Detection patterns are far smaller.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Longest pattern accepted by `re_match` and `glob`, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;
/// Patterns kept compiled; the cache is cleared when it grows past this (bounds memory when a
/// rule builds patterns from event data).
const PATTERN_CACHE_CAPACITY: usize = 512;

/// Translate a shell-style pattern (`*`, `?`, `[abc]`, `[!a-z]`) into an anchored regex, so
/// glob matching is linear in the text and can share the compiled-pattern cache.
pub fn glob_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push_str("(?s)\\A");
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                // Consecutive stars mean the same as one.
                while i + 1 < chars.len() && chars[i + 1] == '*' {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => match class_end(&chars, i) {
                Some(end) => {
                    push_class(&mut out, &chars[i + 1..end]);
                    i = end;
                }
                None => out.push_str("\\["),
            },
            c => push_literal(&mut out, c),
        }
        i += 1;
    }
    out.push_str("\\z");
    out
}

/// Index of the `]` closing the class opened at `start`, if any. As in fnmatch, a `]` right
/// after `[` or `[!` is a literal member.
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut j = start + 1;
    if chars.get(j) == Some(&'!') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() {
        if chars[j] == ']' {
            return Some(j);
        }
        j += 1;
    }
    None
}

fn push_class(out: &mut String, body: &[char]) {
    out.push('[');
    let mut body = body;
    if body.first() == Some(&'!') {
        out.push('^');
        body = &body[1..];
    }
    for (k, &c) in body.iter().enumerate() {
        let is_range_dash = c == '-' && k > 0 && k + 1 < body.len();
        if is_range_dash {
            out.push('-');
        } else {
            push_class_literal(out, c);
        }
    }
    out.push(']');
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

fn push_class_literal(out: &mut String, c: char) {
    if c.is_ascii_punctuation() {
        out.push('\\');
    }
    out.push(c);
}

/// Is `ip` inside `network` ("10.0.0.0/8", "2001:db8::/32", or a bare address)?
/// `Ok(false)` for an `ip` that is not an address (event data may be anything);
/// `Err` for a malformed `network` (a mistake in the rule).
pub fn cidr_contains(ip: &str, network: &str) -> Result<bool, String> {
    let (net_addr, prefix) = parse_network(network)?;
    let Ok(addr) = ip.trim().parse::<IpAddr>() else {
        return Ok(false);
    };
    Ok(match (normalize(addr), net_addr) {
        (IpAddr::V4(a), IpAddr::V4(n)) => prefix_match(
            u128::from(u32::from(a)),
            u128::from(u32::from(n)),
            prefix,
            32,
        ),
        (IpAddr::V6(a), IpAddr::V6(n)) => prefix_match(u128::from(a), u128::from(n), prefix, 128),
        _ => false,
    })
}

fn parse_network(network: &str) -> Result<(IpAddr, u32), String> {
    let bad = || format!("cidr: '{network}' is not a network such as 10.0.0.0/8 or 2001:db8::/32");
    let (addr_text, prefix_text) = match network.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (network.trim(), None),
    };
    let addr = normalize(addr_text.parse::<IpAddr>().map_err(|_| bad())?);
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        Some(p) => p.parse::<u32>().map_err(|_| bad())?,
        None => width,
    };
    if prefix > width {
        return Err(bad());
    }
    Ok((addr, prefix))
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) compare as the IPv4 address they carry.
fn normalize(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_match(addr: u128, net: u128, prefix: u32, width: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (addr >> shift) == (net >> shift)
}

/// Shannon entropy of `text` in bits per character (0.0 for the empty string).
pub fn entropy(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut total = 0usize;
    let mut probabilities = Vec::new();
    if text.is_ascii() {
        let mut counts = [0usize; 128];
        for b in text.bytes() {
            counts[usize::from(b)] += 1;
        }
        total = text.len();
        probabilities.extend(counts.iter().filter(|&&n| n > 0).copied());
    } else {
        let mut counts: HashMap<char, usize> = HashMap::new();
        for c in text.chars() {
            *counts.entry(c).or_insert(0) += 1;
            total += 1;
        }
        probabilities.extend(counts.values().copied());
    }
    let total = total as f64;
    probabilities
        .into_iter()
        .map(|n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum()
}

#[derive(Clone, Copy)]
enum PatternKind {
    Regex,
    Glob,
}

pub type Compiled = Result<Arc<Regex>, String>;

/// Compiled `re_match` and `glob` patterns, compiled once per engine and reused across
/// events and rules. Failed compilations are cached too, so a bad pattern costs once.
#[derive(Default)]
pub struct PatternCache {
    regexes: FastMap<String, Compiled>,
    globs: FastMap<String, Compiled>,
}

impl PatternCache {
    pub fn regex(&mut self, pattern: &str) -> Compiled {
        Self::get(&mut self.regexes, PatternKind::Regex, pattern)
    }

    pub fn glob(&mut self, pattern: &str) -> Compiled {
        Self::get(&mut self.globs, PatternKind::Glob, pattern)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.regexes.len() + self.globs.len()
    }

    fn get(map: &mut FastMap<String, Compiled>, kind: PatternKind, pattern: &str) -> Compiled {
        if let Some(found) = map.get(pattern) {
            return found.clone();
        }
        let compiled = compile(kind, pattern);
        if map.len() >= PATTERN_CACHE_CAPACITY {
            map.clear();
        }
        map.insert(pattern.to_owned(), compiled.clone());
        compiled
    }
}

/// Compile a `re_match` pattern as the cache does (same limits, same errors).
pub fn compile_regex(pattern: &str) -> Compiled {
    compile(PatternKind::Regex, pattern)
}

/// Compile a `glob` pattern as the cache does (same limits, same errors).
pub fn compile_glob(pattern: &str) -> Compiled {
    compile(PatternKind::Glob, pattern)
}

fn compile(kind: PatternKind, pattern: &str) -> Compiled {
    let name = match kind {
        PatternKind::Regex => "re_match",
        PatternKind::Glob => "glob",
    };
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "{name}: pattern is {} bytes, longer than the {MAX_PATTERN_LEN}-byte maximum",
            pattern.len()
        ));
    }
    let source = match kind {
        PatternKind::Regex => pattern.to_owned(),
        PatternKind::Glob => glob_to_regex(pattern),
    };
    RegexBuilder::new(&source)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Arc::new)
        .map_err(|e| format!("{name}: invalid pattern '{pattern}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str, pattern: &str) -> bool {
        PatternCache::default()
            .glob(pattern)
            .expect("pattern compiles")
            .is_match(text)
    }

    #[test]
    fn glob_star_question_and_literals() {
        assert!(glob("/usr/bin/curl", "/usr/bin/*"));
        assert!(glob("/usr/bin/curl", "*curl"));
        assert!(glob("curl", "c?rl"));
        assert!(!glob("curl", "c?r"));
        assert!(!glob("/usr/bin/curl", "/usr/bin/wget"));
        assert!(glob("a.b(c)+", "a.b(c)+"));
        assert!(!glob("axb", "a.b"));
        assert!(glob("", "*"));
        assert!(glob("line1\nline2", "line1*"));
    }

    #[test]
    fn glob_is_anchored() {
        assert!(!glob("xx/tmp/a", "/tmp/*"));
        assert!(!glob("/tmp/a", "/tmp"));
    }

    #[test]
    fn glob_classes() {
        assert!(glob("file7", "file[0-9]"));
        assert!(!glob("filex", "file[0-9]"));
        assert!(glob("filex", "file[!0-9]"));
        assert!(glob("a]", "a[]]"));
        assert!(glob("a-", "a[a-]"));
        assert!(glob("a^", "a[\\^]"));
        assert!(glob("[x", "[x"), "unclosed bracket is literal");
    }

    #[test]
    fn regex_cache_compiles_once_and_caches_errors() {
        let mut cache = PatternCache::default();
        let a = cache.regex("cu?rl").expect("valid");
        let b = cache.regex("cu?rl").expect("valid");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(cache.regex("(").is_err());
        assert!(cache.regex("(").is_err());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn regex_too_large_is_refused() {
        let mut cache = PatternCache::default();
        assert!(cache.regex("(\\w{100}){100}").is_err());
        assert!(cache.regex(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
    }

    #[test]
    fn cidr_ipv4() {
        assert_eq!(cidr_contains("10.1.2.3", "10.0.0.0/8"), Ok(true));
        assert_eq!(cidr_contains("11.1.2.3", "10.0.0.0/8"), Ok(false));
        assert_eq!(cidr_contains("192.168.1.77", "192.168.1.64/26"), Ok(true));
        assert_eq!(cidr_contains("192.168.1.128", "192.168.1.64/26"), Ok(false));
        assert_eq!(cidr_contains("1.2.3.4", "0.0.0.0/0"), Ok(true));
        assert_eq!(cidr_contains("1.2.3.4", "1.2.3.4"), Ok(true));
        assert_eq!(cidr_contains("1.2.3.5", "1.2.3.4/32"), Ok(false));
    }

    #[test]
    fn cidr_ipv6_and_mapped() {
        assert_eq!(cidr_contains("2001:db8::1", "2001:db8::/32"), Ok(true));
        assert_eq!(cidr_contains("2001:db9::1", "2001:db8::/32"), Ok(false));
        assert_eq!(cidr_contains("::ffff:10.0.0.1", "10.0.0.0/8"), Ok(true));
        assert_eq!(cidr_contains("10.0.0.1", "2001:db8::/32"), Ok(false));
        assert_eq!(cidr_contains("::1", "::/0"), Ok(true));
    }

    #[test]
    fn cidr_bad_inputs() {
        assert_eq!(cidr_contains("not-an-ip", "10.0.0.0/8"), Ok(false));
        assert!(cidr_contains("10.0.0.1", "10.0.0.0/33").is_err());
        assert!(cidr_contains("10.0.0.1", "10.0.0/8").is_err());
        assert!(cidr_contains("10.0.0.1", "10.0.0.0/x").is_err());
    }

    #[test]
    fn entropy_values() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("ab") - 1.0).abs() < 1e-12);
        assert!((entropy("abcd") - 2.0).abs() < 1e-12);
        assert!((entropy("ééaa") - 1.0).abs() < 1e-12);
        let random_like = entropy("x9Qz7LmP2vT8kR4wB6nY");
        assert!(random_like > 4.0, "{random_like}");
    }
}
