//! A hand-written JSON parser for the common event line, with serde_json as the authority.
//!
//! Parsing was most of the engine's time per event, and most of that was serde's generic
//! machinery (a visitor call per token, UTF-8 validation per string, a key type per key).
//! Event lines are plain: compact objects of short ASCII strings and small integers. This
//! parser handles exactly that well and gives up (`None`) on anything unusual, and the
//! caller then asks serde (`Projection::parse_serde`), so serde still decides every hard
//! case and every error message; this parser never has to reproduce one.
//!
//! The contract is one-sided: `Some(v)` only where serde's projected parse gives `Ok(v)`,
//! the same value entry for entry (floats to the bit, strings borrowed exactly where serde
//! borrows them). Being stricter than serde is always allowed; it only costs a fallback.

use crate::json::{Bump, Json};
use crate::projection::{Fields, Projection};

/// Containers nested deeper than this are left to serde. Its own limit is 128 for values it
/// builds (none for skipped ones); staying well below it means no line this parser accepts
/// can be one serde rejects for depth.
const MAX_DEPTH: usize = 64;

/// Integers of at most this many digits cannot overflow an `i64`; longer ones (rare: they
/// may become floats) go to serde.
const MAX_PLAIN_DIGITS: usize = 18;

type ArenaVec<'a, T> = bumpalo::collections::Vec<'a, T>;

/// The keys wanted at a map (`None`: all of them, and everything below).
type Wanted<'p> = Option<&'p Fields>;

fn fields_of(projection: &Projection) -> Wanted<'_> {
    match projection {
        Projection::Whole => None,
        Projection::Fields(fields) => Some(fields),
    }
}

/// Parse one line under `projection` (maps, arrays and unescaped strings into `arena`), or
/// `None` where serde must decide (see the module).
pub fn parse<'a>(line: &'a [u8], projection: &Projection, arena: &'a Bump) -> Option<Json<'a>> {
    // JSON's structure is ASCII, so bytes past ASCII can only be inside strings, and every
    // string is scanned, which stops at each of them to check its character (`past_char`):
    // a line this accepts is valid UTF-8 without a pass of its own to check that. Serde
    // accepts invalid UTF-8 inside skipped strings; such a line falls back.
    let mut parser = Parser {
        bytes: line,
        pos: 0,
        arena,
    };
    let value = parser.value(fields_of(projection), 0)?;
    // Nothing but whitespace may follow.
    token(line, parser.pos).is_none().then_some(value)
}

/// Check the contract on one line: `Ok(true)` when this parser gave the value serde gives,
/// `Ok(false)` when it left the line to serde, `Err` (what differs) when it broke the
/// contract. For the tests and the fuzz target.
pub fn check_against_serde(line: &[u8], projection: &Projection) -> Result<bool, String> {
    let (ours, serdes) = (Bump::new(), Bump::new());
    let Some(fast) = parse(line, projection, &ours) else {
        return Ok(false);
    };
    match projection.parse_serde(line, &serdes) {
        Ok(reference) if identical(&fast, &reference, line) => Ok(true),
        Ok(reference) => Err(format!("fast {fast:?}, serde {reference:?}")),
        Err(e) => Err(format!("fast {fast:?}, serde error {e}")),
    }
}

/// Equal to the bit, for values parsed from `line`: `==` would call `-0.0` and `0.0` equal
/// and not see whether a string is borrowed from the line (or was unescaped into an arena).
pub fn identical(a: &Json, b: &Json, line: &[u8]) -> bool {
    let borrowed = |s: &str| line.as_ptr_range().contains(&s.as_ptr());
    let same_str = |a: &str, b: &str| a == b && borrowed(a) == borrowed(b);
    match (a, b) {
        (Json::Float(x), Json::Float(y)) => x.to_bits() == y.to_bits(),
        (Json::Str(x), Json::Str(y)) => same_str(x, y),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(*y).all(|(a, b)| identical(a, b, line))
        }
        (Json::Map(x), Json::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(*y)
                    .all(|((ka, va), (kb, vb))| same_str(ka, kb) && identical(va, vb, line))
        }
        _ => a == b,
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    arena: &'a Bump,
}

impl<'a> Parser<'a> {
    /// The next byte that is not whitespace, not consumed; `None` at the end.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        let (b, at) = token(self.bytes, self.pos)?;
        self.pos = at;
        Some(b)
    }

    /// The next byte that is not whitespace, consumed even where the caller then fails: a
    /// parse that fails is dropped whole, so where it stopped does not matter, and one
    /// store of the position per token is saved.
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let (b, at) = token(self.bytes, self.pos)?;
        self.pos = at + 1;
        Some(b)
    }

    /// Consume `expected` (after whitespace), or fail.
    #[inline(always)]
    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// Inlined into its callers (`map`, `array`), so that a scalar goes from registers into
    /// its entry: returned from a call, a `Json` went through the stack at every level
    /// (stored in parts, reloaded whole, which the CPU cannot forward), which cost a fifth
    /// of the parse.
    #[inline(always)]
    fn value(&mut self, fields: Wanted, depth: usize) -> Option<Json<'a>> {
        Some(match self.peek()? {
            b'{' => Json::Map(self.map(fields, depth + 1)?),
            b'[' => Json::Array(self.array(depth + 1)?),
            b'"' => {
                self.pos += 1;
                Json::Str(self.string()?)
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => {
                self.pos = literal(self.bytes, self.pos, b"true")?;
                Json::Bool(true)
            }
            b'f' => {
                self.pos = literal(self.bytes, self.pos, b"false")?;
                Json::Bool(false)
            }
            b'n' => {
                self.pos = literal(self.bytes, self.pos, b"null")?;
                Json::Unit
            }
            _ => return None,
        })
    }

    /// A map whose keys are wanted as `fields` says; entries keep the input's order,
    /// duplicates included, as `ProjectVisitor::visit_map` keeps them.
    fn map(&mut self, fields: Wanted, depth: usize) -> Option<&'a [(&'a str, Json<'a>)]> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(&[]);
        }
        // A projected map rarely has more entries than wanted fields. (Past its capacity
        // the arena copies it, once maps inside it have been allocated after it.)
        let mut entries = ArenaVec::with_capacity_in(fields.map_or(8, Fields::len), self.arena);
        loop {
            self.eat(b'"')?;
            // Serde parses every key of a map it builds (validating its escapes), then
            // compares the decoded key: so does this.
            let key = self.string()?;
            self.eat(b':')?;
            // `Some(sub)`: the value is wanted, under `sub`.
            let wanted = match fields {
                None => Some(None),
                Some(wanted) => wanted.get(key).map(fields_of),
            };
            match wanted {
                Some(sub) => {
                    let value = self.value(sub, depth)?;
                    entries.push((key, value));
                }
                None => self.skip_value(depth)?,
            }
            match self.next()? {
                b',' => {}
                b'}' => return Some(entries.into_bump_slice()),
                _ => return None,
            }
        }
    }

    /// Arrays are kept whole, as the visitor keeps them: a projection names map keys only.
    fn array(&mut self, depth: usize) -> Option<&'a [Json<'a>]> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(&[]);
        }
        let mut items = ArenaVec::new_in(self.arena);
        loop {
            let item = self.value(None, depth)?;
            items.push(item);
            match self.next()? {
                b',' => {}
                b']' => return Some(items.into_bump_slice()),
                _ => return None,
            }
        }
    }

    /// A string, its opening quote consumed: borrowed when it has no escape (as serde
    /// borrows it), decoded into the arena when it has.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let mut from = start;
        loop {
            let (end, stop) = scan_plain(self.bytes, from);
            match stop {
                b'"' => {
                    self.pos = end + 1;
                    return Some(self.between_quotes(start, end));
                }
                b'\\' => return self.escaped(start, end),
                0x80.. => from = past_char(self.bytes, end)?,
                // A raw control character, which serde rejects.
                _ => return None,
            }
        }
    }

    /// The text from `start` to `end`, the inside of a string whose run to its closing
    /// quote at `end` was scanned: ASCII bytes, and characters `past_char` checked.
    #[inline(always)]
    fn between_quotes(&self, start: usize, end: usize) -> &'a str {
        debug_assert!(std::str::from_utf8(&self.bytes[start..end]).is_ok());
        // SAFETY: the range is in bounds, `end` being the index of a quote found in it
        // after `start`; it is valid UTF-8 (above). Checked conversion and slicing looked
        // at every byte and both boundaries again for every string of every event.
        unsafe { std::str::from_utf8_unchecked(self.bytes.get_unchecked(start..end)) }
    }

    /// The rest of a string from `start`, whose first escape is at `at`.
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, start: usize, mut at: usize) -> Option<&'a str> {
        let mut out = String::with_capacity(at - start + 16);
        let mut segment = start;
        loop {
            // A segment (between escapes and quotes) is valid UTF-8, its characters past ASCII
            // checked as it was scanned; converted with a check all the same, this being rare.
            let text = |to| std::str::from_utf8(&self.bytes[segment..to]).ok();
            match *self.bytes.get(at)? {
                b'"' => {
                    out.push_str(text(at)?);
                    self.pos = at + 1;
                    return Some(self.arena.alloc_str(&out));
                }
                b'\\' => {
                    out.push_str(text(at)?);
                    at = self.unescape(at + 1, &mut out)?;
                    segment = at;
                }
                0x80.. => at = past_char(self.bytes, at)?,
                _ => return None,
            }
            at = scan_plain(self.bytes, at).0;
        }
    }

    /// Decode the escape whose letter is at `at` into `out`; the index after it.
    fn unescape(&self, at: usize, out: &mut String) -> Option<usize> {
        let decoded = match *self.bytes.get(at)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode(at + 1, out),
            _ => return None,
        };
        out.push(decoded);
        Some(at + 1)
    }

    /// A `\u` escape's digits at `at`, strictly as serde decodes a string it keeps: a
    /// surrogate must be a leading one followed at once by an escaped trailing one.
    fn unicode(&self, at: usize, out: &mut String) -> Option<usize> {
        let unit = hex4(self.bytes, at)?;
        let (code, next) = match unit {
            0xDC00..=0xDFFF => return None,
            0xD800..=0xDBFF => {
                if self.bytes.get(at + 4..at + 6)? != b"\\u" {
                    return None;
                }
                let low = hex4(self.bytes, at + 6)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return None;
                }
                let code =
                    ((u32::from(unit) - 0xD800) << 10 | (u32::from(low) - 0xDC00)) + 0x1_0000;
                (code, at + 10)
            }
            _ => (u32::from(unit), at + 4),
        };
        out.push(char::from_u32(code)?);
        Some(next)
    }

    /// A number: small plain integers here; `-0` as serde gives it (the float -0.0); the
    /// rest (fractions, exponents, long integers) through serde, so floats and the
    /// integer-to-float conversions are serde's own, to the bit.
    fn number(&mut self) -> Option<Json<'a>> {
        let start = self.pos;
        let (end, plain) = scan_number(self.bytes, start)?;
        self.pos = end;
        let negative = self.bytes[start] == b'-';
        let digits = &self.bytes[start + usize::from(negative)..end];
        if plain && digits.len() <= MAX_PLAIN_DIGITS {
            let magnitude = digits
                .iter()
                .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
            return Some(match (negative, magnitude) {
                (true, 0) => Json::Float(-0.0),
                (true, n) => Json::Int(-n),
                (false, n) => Json::Int(n),
            });
        }
        Projection::Whole
            .parse_serde(&self.bytes[start..end], self.arena)
            .ok()
    }

    /// Skip a value nobody reads, validating it as serde's `ignore_value` does (or more
    /// strictly: nesting is bounded here).
    ///
    /// Skipped values are most of an event's tokens, so this is one loop over them with the
    /// open containers kept as bits, where a call per value (and its `Option`, and its
    /// saved registers) cost a fifth of the parse.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        let bytes = self.bytes;
        let mut at = self.pos;
        // Bit `n` is set when the container `n` levels out from the innermost open one is a
        // map (and clear for an array); `open` counts them, and stays below `MAX_DEPTH`
        // (64), so the bits fit.
        let mut maps = 0u64;
        let mut open = 0usize;
        loop {
            let (b, here) = token(bytes, at)?;
            at = match b {
                b'"' => skip_string(bytes, here + 1)?,
                b'{' => {
                    if depth + open >= MAX_DEPTH {
                        return None;
                    }
                    let (next, inside) = token(bytes, here + 1)?;
                    if next == b'}' {
                        inside + 1
                    } else {
                        open += 1;
                        maps = maps << 1 | 1;
                        at = skip_key(bytes, (next, inside))?;
                        continue;
                    }
                }
                b'[' => {
                    if depth + open >= MAX_DEPTH {
                        return None;
                    }
                    let (next, inside) = token(bytes, here + 1)?;
                    if next == b']' {
                        inside + 1
                    } else {
                        open += 1;
                        maps <<= 1;
                        at = inside;
                        continue;
                    }
                }
                // Serde does not check the range of a skipped number (`1e400` is fine). A
                // positive one's first digit is known here, and not read again.
                b'1'..=b'9' => after_integer(bytes, digits_end(bytes, here + 1))?.0,
                b'-' | b'0' => scan_number(bytes, here)?.0,
                b't' => literal(bytes, here, b"true")?,
                b'f' => literal(bytes, here, b"false")?,
                b'n' => literal(bytes, here, b"null")?,
                _ => return None,
            };
            // After a value: a comma and the next one (after its key, in a map), or the
            // closer of the innermost container, which is itself a value that ended.
            loop {
                if open == 0 {
                    self.pos = at;
                    return Some(());
                }
                let (b, here) = token(bytes, at)?;
                let in_map = maps & 1 == 1;
                if b == b',' {
                    at = if in_map {
                        skip_key(bytes, token(bytes, here + 1)?)?
                    } else {
                        here + 1
                    };
                    break;
                }
                if b != if in_map { b'}' } else { b']' } {
                    return None;
                }
                at = here + 1;
                maps >>= 1;
                open -= 1;
            }
        }
    }
}

/// The first byte from `at` that is not whitespace, and its index; `None` at the end.
#[inline(always)]
fn token(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    // Event lines are compact: a token almost always starts right here.
    match bytes.get(at) {
        Some(&b) if b > b' ' => Some((b, at)),
        _ => token_after_space(bytes, at),
    }
}

/// The same, past whitespace: exactly serde's (no form feed, no BOM, no Unicode spaces).
#[cold]
#[inline(never)]
fn token_after_space(bytes: &[u8], mut at: usize) -> Option<(u8, usize)> {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(at) {
        at += 1;
    }
    bytes.get(at).map(|&b| (b, at))
}

/// `word` (a literal) at `at`: the index after it. The word is a constant where this is
/// inlined, so the comparison is one load and compare, not a call to `bcmp`.
#[inline(always)]
fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    (bytes.get(at..at + word.len())? == word).then_some(at + word.len())
}

/// A skipped map's key, from its first token (which its caller has read), through the
/// colon after it: the index after the colon.
#[inline(always)]
fn skip_key(bytes: &[u8], (quote, at): (u8, usize)) -> Option<usize> {
    if quote != b'"' {
        return None;
    }
    let (colon, at) = token(bytes, skip_string(bytes, at + 1)?)?;
    (colon == b':').then_some(at + 1)
}

/// Skip a string from `at` (its opening quote consumed): the index after its closing
/// quote. Escapes are checked as serde's `ignore_str` checks them: a `\u` needs four hex
/// digits but may be any code unit.
#[inline(always)]
fn skip_string(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let (end, stop) = scan_plain(bytes, at);
        match stop {
            b'"' => return Some(end + 1),
            b'\\' => at = skip_escape(bytes, end + 1)?,
            0x80.. => at = past_char(bytes, end)?,
            _ => return None,
        }
    }
}

/// The index after the character at `at`, whose first byte is past ASCII, or `None` where
/// that is not the start of a valid UTF-8 character.
#[cold]
#[inline(never)]
fn past_char(bytes: &[u8], at: usize) -> Option<usize> {
    let width = match *bytes.get(at)? {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let char = bytes.get(at..at + width)?;
    std::str::from_utf8(char).is_ok().then_some(at + width)
}

/// An escape in a skipped string, its letter at `at`: the index after it.
#[cold]
#[inline(never)]
fn skip_escape(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => {
            hex4(bytes, at + 1)?;
            Some(at + 5)
        }
        _ => None,
    }
}

/// Four hex digits at `at`.
fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at + 4)?.iter().try_fold(0u16, |n, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(n << 4 | digit as u16)
    })
}

/// The end of a number's text starting at `at` (JSON's grammar, as serde reads it), and
/// whether it is a plain integer (no fraction, no exponent).
#[inline(always)]
fn scan_number(bytes: &[u8], mut at: usize) -> Option<(usize, bool)> {
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match *bytes.get(at)? {
        // One leading zero only: `01` leaves `1` behind, which nothing accepts.
        b'0' => after_integer(bytes, at + 1),
        b'1'..=b'9' => after_integer(bytes, digits_end(bytes, at + 1)),
        _ => None,
    }
}

/// The same for a number whose integer part ends at `at`.
#[inline(always)]
fn after_integer(bytes: &[u8], at: usize) -> Option<(usize, bool)> {
    match bytes.get(at) {
        Some(b'.' | b'e' | b'E') => Some((fraction_and_exponent(bytes, at)?, false)),
        _ => Some((at, true)),
    }
}

/// The rest of a number whose integer part ends at `at`, where a fraction or an exponent
/// starts: the index after it.
#[cold]
#[inline(never)]
fn fraction_and_exponent(bytes: &[u8], mut at: usize) -> Option<usize> {
    if bytes.get(at) == Some(&b'.') {
        let end = digits_end(bytes, at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        let end = digits_end(bytes, at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

/// The end of the run of ASCII digits from `at`. Eight bytes at a time where eight are
/// left: ports, ids and sizes have four to six digits, which took a compare each.
#[inline(always)]
fn digits_end(bytes: &[u8], mut at: usize) -> usize {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        // A byte is a digit when its high nibble is 3, and still is with 6 added (0x30 to
        // 0x39). Only a byte of 0xFA or more carries into the next one, and it is not a
        // digit, so every byte up to the first non-digit is judged exactly.
        let not_digit = ((word & HIGH) ^ THREES) | ((word.wrapping_add(SIXES) & HIGH) ^ THREES);
        if not_digit != 0 {
            return at + (not_digit.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// The index of the first byte from `at` that ends a plain run inside a string (a quote, a
/// backslash, a control character, which serde rejects raw, or a byte past ASCII, whose
/// character is to be checked), and that byte; at the end of `bytes`, its length and 0 (a
/// control character too). Returning the byte spares every caller a bounds check to read
/// it again.
///
/// Sixteen bytes at a time with SSE2, which every x86-64 processor has: most strings of an
/// event are shorter than that, so one compare finds their end (the word-at-a-time loop
/// below took two or three rounds, and was a tenth of the parse).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn scan_plain(bytes: &[u8], mut at: usize) -> (usize, u8) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // The positions in these 16 bytes of a quote, a backslash, or a byte below 0x20 or
    // past 0x7f.
    let stops = |chunk: &[u8; 16]| -> u32 {
        // SAFETY: SSE2 is always enabled on x86-64 (the intrinsics only need it), and the
        // load reads exactly the 16 bytes of `chunk`, unaligned loads being allowed.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Signed, the bytes past 0x7f are negative, so below 0x20 too.
            let other = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), other)) as u32
        }
    };
    // Not `get(at..at + 16)`, which also checked that `at + 16` does not overflow.
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<16>) {
        let found = stops(chunk);
        if found != 0 {
            // A 16-bit mask that is not zero: its lowest set bit is below 16.
            let i = found.trailing_zeros() as usize & 15;
            return (at + i, chunk[i]);
        }
        at += 16;
    }
    // The last few bytes (fewer than 16), padded with zeros: a control character, so the
    // padding's first byte (the end of `bytes`) is found if nothing before it is.
    let rest = bytes.get(at..).unwrap_or_default();
    let mut chunk = [0u8; 16];
    chunk[..rest.len()].copy_from_slice(rest);
    let i = stops(&chunk).trailing_zeros() as usize & 15;
    (at + i, chunk[i])
}

/// The same, eight bytes at a time, with the word tricks serde uses: a set high bit marks a
/// byte that matched (bits may also be set above a match, never below the first one).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn scan_plain(bytes: &[u8], mut at: usize) -> (usize, u8) {
    const ONES: u64 = u64::MAX / 255;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let quote = word ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        // A byte past 0x7f has its high bit set already.
        let hits = (control | quote | backslash | word) & (ONES << 7);
        if hits != 0 {
            let i = (hits.trailing_zeros() / 8) as usize;
            return (at + i, chunk[i]);
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 || b > 0x7f {
            return (at, b);
        }
        at += 1;
    }
    (at, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("testdata/events_sample.jsonl");

    fn fields(paths: &[&[&str]]) -> Projection {
        let mut p = Projection::default();
        for path in paths {
            p.add_path(path);
        }
        p
    }

    /// What the engine asks of an event for the core rule pack, and some odder shapes.
    fn projections() -> Vec<Projection> {
        vec![
            Projection::Whole,
            Projection::default(),
            fields(&[
                &["kind"],
                &["ts"],
                &["host", "id"],
                &["proc", "exe"],
                &["proc", "cmdline"],
                &["net", "dst_ip"],
                &["net", "dst_port"],
                &["dns", "answers"],
                &["file", "path"],
                &["auth", "user"],
            ]),
            fields(&[
                &["a"],
                &["b", "c", "d"],
                &["b", "e"],
                &["dup", "x"],
                &[""],
                &["é"],
                &["q\"k"],
                &["x", "y", "z", "w"],
            ]),
        ]
    }

    /// The contract on one line under every projection; whether the fast path took it
    /// under each.
    fn check_all(line: &[u8]) -> Vec<bool> {
        projections()
            .iter()
            .map(|p| {
                check_against_serde(line, p).unwrap_or_else(|e| {
                    panic!("{:?} under {p:?}: {e}", String::from_utf8_lossy(line))
                })
            })
            .collect()
    }

    #[test]
    fn every_sample_event_takes_the_fast_path() {
        let mut lines = 0;
        for line in SAMPLE.lines() {
            lines += 1;
            assert_eq!(check_all(line.as_bytes()), [true; 4], "{line}");
        }
        assert!(lines >= 15);
    }

    #[test]
    fn values_are_serdes_to_the_bit() {
        // Leaked: the values outlive the test's statements.
        fn fast(json: &'static str) -> Json<'static> {
            let arena = Box::leak(Box::new(Bump::new()));
            parse(json.as_bytes(), &Projection::Whole, arena).expect(json)
        }
        let borrowed =
            |json: &'static str, s: &str| json.as_bytes().as_ptr_range().contains(&s.as_ptr());
        assert_eq!(fast("-0"), Json::Float(0.0));
        assert!(matches!(fast("-0"), Json::Float(f) if f.is_sign_negative()));
        assert!(matches!(fast("0"), Json::Int(0)));
        assert!(matches!(fast("-12"), Json::Int(-12)));
        assert!(matches!(
            fast("999999999999999999"),
            Json::Int(999_999_999_999_999_999)
        ));
        assert!(matches!(fast("9223372036854775807"), Json::Int(i64::MAX)));
        assert!(matches!(fast("-9223372036854775808"), Json::Int(i64::MIN)));
        assert!(matches!(fast("9223372036854775808"), Json::Float(_)));
        assert!(matches!(fast("-9223372036854775809"), Json::Float(_)));
        assert!(matches!(fast("18446744073709551615"), Json::Float(_)));
        assert!(matches!(fast("1.5e3"), Json::Float(f) if f == 1500.0));
        let plain = r#""plain""#;
        assert!(matches!(fast(plain), Json::Str(s) if s == "plain" && borrowed(plain, s)));
        let escaped = r#""a\nb""#;
        assert!(matches!(fast(escaped), Json::Str(s) if s == "a\nb" && !borrowed(escaped, s)));
        assert!(matches!(fast(r#""\ud83d\ude00""#), Json::Str("😀")));
        let keys = r#"{"k\u00e9y": 1, "k\u00e9y": 2}"#;
        let Json::Map(entries) = fast(keys) else {
            panic!("a map");
        };
        assert_eq!(entries.len(), 2);
        assert!(entries[0].0 == "kéy" && !borrowed(keys, entries[0].0));
    }

    #[test]
    fn edge_cases_agree_with_serde() {
        // (input, whether the fast path must take it under every projection)
        let cases: &[(&[u8], bool)] = &[
            (br#"{}"#, true),
            (br#"[]"#, true),
            (br#" { "a" : [ 1 , { "b" : null } ] , "b" : { "c" : { "d" : true } } } "#, true),
            (b"\t\r\n{\"a\":1}\n\r\t ", true),
            (br#"{"a":"\"\\\/\b\f\n\r\t"}"#, true),
            (br#"{"a":"\u0041\u00e9\u20ac\ud83d\ude00"}"#, true),
            (br#"{"\u0061":1,"a":2,"a":3}"#, true),
            (br#"{"dup":{"x":1},"dup":{"x":2,"y":3}}"#, true),
            (br#"{"a":-0,"b":0.0,"c":-0.0,"d":1e400,"e":-1e-400,"f":1E+2,"g":2e-0}"#, false),
            (br#"{"a":18446744073709551615,"b":18446744073709551616,"c":9223372036854775808}"#, true),
            (br#"{"a":-9223372036854775809,"b":-9223372036854775808,"c":123456789012345678901234}"#, true),
            (br#"{"skip":1e400,"a":1}"#, false),
            (br#"{"skip":"\ud800","a":1}"#, false),
            (br#"{"a":"\ud800"}"#, false),
            (br#"{"a":"\udc00"}"#, false),
            (br#"{"a":"\ud800\u0041"}"#, false),
            (br#"{"a":"\ud800x"}"#, false),
            (br#"{"a":"\ud800\ud800"}"#, false),
            (br#"{"a":"\u00"}"#, false),
            (br#"{"a":"\uzzzz"}"#, false),
            (br#"{"a":"\x"}"#, false),
            (b"{\"a\":\"tab\there\"}", false),
            (b"{\"skip\":\"nul\x00\"}", false),
            (b"{\"a\":\"\x7f\"}", true),
            (b"{\"skip\":\"\xff\xfe\",\"a\":1}", false),
            (b"{\"a\":\"\xc3\xa9\"}", true),
            (b"\xef\xbb\xbf{\"a\":1}", false),
            (b"{\"a\":1}\x0c", false),
            (br#"{"a":01}"#, false),
            (br#"{"a":1.}"#, false),
            (br#"{"a":.5}"#, false),
            (br#"{"a":+1}"#, false),
            (br#"{"a":-}"#, false),
            (br#"{"a":1e}"#, false),
            (br#"{"a":1e+}"#, false),
            (br#"{"a":--1}"#, false),
            (br#"{"a":tru}"#, false),
            (br#"{"a":nul}"#, false),
            (br#"{"a":truex}"#, false),
            (br#"{"a":1,}"#, false),
            (br#"{"a":1 "b":2}"#, false),
            (br#"{"a" 1}"#, false),
            (br#"{a:1}"#, false),
            (br#"{"a":[1,]}"#, false),
            (br#"{"a":[1 2]}"#, false),
            (br#"{"skip":[1,]}"#, false),
            (br#"{"skip":{"x":}}"#, false),
            (br#"{"skip":{"x":1,}}"#, false),
            (br#"{"skip":{1:2}}"#, false),
            (br#"{"skip":"unterminated}"#, false),
            (br#"{"a":1} trailing"#, false),
            (br#"{"a":1}}"#, false),
            (br#"{"a":1}{}"#, false),
            (br#"{"a":1"#, false),
            (br#""#, false),
            (br#"   "#, false),
            (br#""just a string""#, true),
            (br#"12"#, true),
            (br#"null"#, true),
            (br#"[{"a":1},"x",[true,false]]"#, true),
            (br#"{"a":"not a map","b":[{"c":1}],"x":{"y":"z"}}"#, true),
            // Skipped containers: nesting of both kinds, empty ones, whitespace anywhere,
            // numbers with fewer than eight bytes after them, and every misplaced closer.
            (br#"{"skip":[1,{"a":[]},{},[[]],"s",true,null,false,-0.5e1],"a":1}"#, true),
            (br#"{"skip": [ 1 , { "x" : [ 2 ] } , [ ] ] , "a" : 1 }"#, true),
            (br#"{"skip":{"x":{"y":{"z":[{"w":{}}]}}}}"#, true),
            (br#"{"skip":123456789}"#, true),
            (br#"{"skip":12345678}"#, true),
            (br#"{"skip":1234567}"#, true),
            (br#"{"skip":0}"#, true),
            (br#"{"skip":-7}"#, true),
            (br#"{"skip":1.25}"#, true),
            (br#"[12345678]"#, true),
            (br#"123456789012"#, true),
            (br#"{"skip":[}"#, false),
            (br#"{"skip":{]}"#, false),
            (br#"{"skip":[1}"#, false),
            (br#"{"skip":{"x":1]}"#, false),
            (br#"{"skip":[[1]}]}"#, false),
            (br#"{"skip":{"x"}}"#, false),
            (br#"{"skip":{"x" 1}}"#, false),
            (br#"{"skip":{,}}"#, false),
            (br#"{"skip":[,1]}"#, false),
            (br#"{"skip":[1,,2]}"#, false),
            (br#"{"skip":{"x":1,,"y":2}}"#, false),
            (br#"{"skip":[1]]}"#, false),
            (br#"{"skip":[1"#, false),
            (br#"{"skip":{"x":1"#, false),
            (br#"{"skip":{"x":"#, false),
            (br#"{"skip":{"x""#, false),
            (br#"{"skip":{"#, false),
            (br#"{"skip":01}"#, false),
            (br#"{"skip":1.}"#, false),
            (br#"{"skip":1e+}"#, false),
            (br#"{"skip":-}"#, false),
            (br#"{"skip":"a\u12"}"#, false),
            (br#"{"skip":"a\u12zz"}"#, false),
            (br#"{"skip":"a\q"}"#, false),
            (br#"{"skip":"\u00e9\n\ud800"}"#, false),
            // Characters past ASCII, each checked where a scan stops at it: kept, skipped,
            // in keys, next to escapes, across 16-byte chunks, and invalid ones.
            ("{\"a\":\"😀é€\",\"skip\":\"ü\"}".as_bytes(), true),
            ("{\"é\":[\"0123456789abcdé\",\"0123456789abcdeé\"]}".as_bytes(), true),
            ("{\"a\":\"é\\n😀\\té\",\"skip\":\"é\\nü\"}".as_bytes(), true),
            ("\"ü\"".as_bytes(), true),
            (b"{\"a\":\"\xc0\x80\"}", false),
            (b"{\"skip\":\"\xc0\x80\"}", false),
            (b"{\"skip\":\"\xed\xa0\x80\"}", false),
            (b"{\"skip\":\"\xf4\x90\x80\x80\"}", false),
            (b"{\"skip\":\"\xf5\x80\x80\x80\"}", false),
            (b"{\"skip\":\"\x80\"}", false),
            (b"{\"skip\":\"\xc3\"}", false),
            (b"{\"skip\":\"\xe2\x82\"}", false),
            (b"{\"a\":\"\xe2\x82", false),
            (b"{\"a\":\"x\\n\xff\"}", false),
            (b"{\"a\":\"x\\n\xc3\xa9\"}", true),
            (b"{\"a\":1}\xc3\xa9", false),
            (b"{\"a\":\xc3\xa9}", false),
            (br#"{"skip":fals}"#, false),
            (br#"{"skip":nulll}"#, false),
        ];
        for &(input, fast) in cases {
            let taken = check_all(input);
            if fast {
                assert_eq!(taken, [true; 4], "{:?}", String::from_utf8_lossy(input));
            }
        }
        // Where serde rejects a line, the fast path must have declined it (check_all would
        // have panicked otherwise); a few of them, to be sure they do reject.
        for bad in [
            &br#"{"a":"\ud800"}"#[..],
            b"{\"a\":\"\t\"}",
            br#"{"a":01}"#,
            b"{} x",
        ] {
            assert!(Projection::Whole.parse_serde(bad, &Bump::new()).is_err());
        }
    }

    #[test]
    fn nesting_past_the_bound_falls_back() {
        for depth in [1, 2, 63, 64, 65, 100, 127, 128, 129, 200] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}"), ("{\"skip\":", "}")] {
                let json = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let taken = check_all(json.as_bytes());
                if depth <= 32 {
                    assert_eq!(taken, [true; 4], "{json}");
                }
                if depth > MAX_DEPTH {
                    assert_eq!(taken, [false; 4], "{json}");
                }
            }
        }
    }

    /// Small and seeded: the same inputs on every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    const KEYS: &[&str] = &[
        "a", "b", "c", "d", "e", "x", "y", "z", "w", "dup", "kind", "ts", "host", "id", "proc",
        "exe", "", "é", r#"q\"k"#, r"\u0061", r"\u00e9", "skip",
    ];

    const STRING_PARTS: &[&str] = &[
        "a",
        "plain text",
        "/usr/bin/sh",
        "é",
        "😀",
        r#"\""#,
        r"\\",
        r"\/",
        r"\b",
        r"\f",
        r"\n",
        r"\r",
        r"\t",
        r"\u0041",
        r"\u00e9",
        r"\ud83d\ude00",
        r"\ud800",
        r"\udc00",
        r"\u12",
        r"\x",
        "\t",
        "\u{1}",
        "\u{7f}",
        "0123456789abcdef",
    ];

    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "42",
        "0.0",
        "-0.0",
        "1.5",
        "1e5",
        "1E-5",
        "2.5e+10",
        "1e400",
        "-1e-400",
        "999999999999999999",
        "-999999999999999999",
        "1000000000000000000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890",
        "01",
        "1.",
        ".5",
        "+1",
        "-",
        "1e",
        "0x10",
    ];

    const SPACE: &[&str] = &["", "", "", "", " ", "\n", "\t", "\r", "  ", "\x0c"];

    fn gen_value(rng: &mut XorShift, depth: usize, out: &mut String) {
        let space = |rng: &mut XorShift, out: &mut String| out.push_str(rng.pick(SPACE));
        space(rng, out);
        match rng.below(if depth > 5 { 5 } else { 8 }) {
            0 => out.push_str(rng.pick(&["null", "true", "false", "nul", "tru"])),
            1 | 2 => out.push_str(rng.pick(NUMBERS)),
            3 | 4 => {
                out.push('"');
                for _ in 0..rng.below(4) {
                    out.push_str(rng.pick(STRING_PARTS));
                }
                out.push('"');
            }
            5 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    gen_value(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.below(6) {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    out.push('"');
                    out.push_str(rng.pick(KEYS));
                    out.push('"');
                    space(rng, out);
                    out.push(':');
                    gen_value(rng, depth + 1, out);
                }
                space(rng, out);
                out.push('}');
            }
        }
        space(rng, out);
    }

    const INTERESTING: &[u8] = b"\"\\{}[],:0-e.+ \t\nutn\x00\x1f\x7f\x80\xc3\xff";

    fn mutate(rng: &mut XorShift, line: &[u8]) -> Vec<u8> {
        let mut bytes = line.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, rng.pick(INTERESTING)),
                _ if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                _ => bytes.push(rng.pick(INTERESTING)),
            }
        }
        bytes
    }

    #[test]
    fn random_documents_agree_with_serde() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut taken = [0usize; 4];
        let mut valid = 0;
        let rounds = 20_000;
        for _ in 0..rounds {
            let mut doc = String::new();
            gen_value(&mut rng, 0, &mut doc);
            if Projection::Whole
                .parse_serde(doc.as_bytes(), &Bump::new())
                .is_ok()
            {
                valid += 1;
            }
            for (n, took) in taken.iter_mut().zip(check_all(doc.as_bytes())) {
                *n += usize::from(took);
            }
            let mutated = mutate(&mut rng, doc.as_bytes());
            check_all(&mutated);
        }
        // The generator must reach the fast path often, or this tests little.
        assert!(valid > rounds / 10, "{valid} valid of {rounds}");
        for n in taken {
            assert!(n > valid / 3, "{taken:?} taken, {valid} valid");
        }
    }

    #[test]
    fn plain_runs_end_where_a_byte_search_ends_them() {
        let mut rng = XorShift(0x5EED_0F5C_A2A2);
        let alphabet = [b'a', b'"', b'\\', 0x00, 0x1f, b' ', 0x7f, 0x80, 0xff, b'z'];
        for _ in 0..20_000 {
            let len = rng.below(48);
            // Mostly plain bytes, so that runs are long enough to span whole chunks.
            let bytes: std::vec::Vec<u8> = (0..len)
                .map(|_| match rng.below(12) {
                    0 => rng.pick(&alphabet),
                    _ => b'a' + rng.below(26) as u8,
                })
                .collect();
            for at in 0..=len {
                let expected = (at..len)
                    .find(|&i| matches!(bytes[i], b'"' | b'\\' | 0x00..=0x1f | 0x80..))
                    .unwrap_or(len);
                let stop = bytes.get(expected).copied().unwrap_or(0);
                assert_eq!(
                    scan_plain(&bytes, at),
                    (expected, stop),
                    "{bytes:?} from {at}"
                );
            }
        }
    }

    #[test]
    fn digit_runs_end_where_a_byte_search_ends_them() {
        let mut rng = XorShift(0xD161_7500_0BAD_F00D);
        // Around the digits, and bytes that carry when 6 is added to them.
        let alphabet = [
            b'/',
            b':',
            b'0',
            b'9',
            b'.',
            b'e',
            0x39 + 0x80,
            0xfa,
            0xff,
            b' ',
        ];
        for _ in 0..20_000 {
            let len = rng.below(24);
            let bytes: std::vec::Vec<u8> = (0..len)
                .map(|_| match rng.below(6) {
                    0 => rng.pick(&alphabet),
                    _ => b'0' + rng.below(10) as u8,
                })
                .collect();
            for at in 0..=len {
                let expected = (at..len)
                    .find(|&i| !bytes[i].is_ascii_digit())
                    .unwrap_or(len);
                assert_eq!(digits_end(&bytes, at), expected, "{bytes:?} from {at}");
            }
        }
    }

    #[test]
    fn mutated_events_agree_with_serde() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let lines: Vec<&str> = SAMPLE.lines().collect();
        let mut taken = 0;
        for _ in 0..20_000 {
            let line = rng.pick(&lines).as_bytes();
            let mutated = mutate(&mut rng, line);
            taken += check_all(&mutated).iter().filter(|&&t| t).count();
        }
        assert!(taken > 10_000, "{taken}");
    }
}
