//! A streaming, pattern-directed JSON scanner.
//!
//! A format declares the few paths it cares about as a static [`Pat`] tree;
//! the scanner walks any JSON document fed to it in pieces of any size and
//! reports the values at those paths to a [`Sink`] as soon as each is
//! complete. Everything else is skipped by bracket counting (string-aware),
//! without allocation. Memory is fixed: the frame stack is bounded by the
//! pattern's depth, keys and bare tokens by small caps.
//!
//! Rules (mirrored exactly by `llmtally.fallback.json_scan`):
//! - structure is validated along matched paths; a syntax error there stops
//!   the document (values already reported stay reported); skipped subtrees
//!   are only bracket-balanced;
//! - a leaf receives an integer (`0|[1-9][0-9]*`, at most `u64::MAX`, also
//!   written with a zero fraction such as `4.0`), a boolean, or a string
//!   delivered as decoded UTF-8 pieces; any other value at a leaf (another
//!   float, null, object...) is ignored;
//! - a `\u` escape of a lone surrogate decodes to U+FFFD; other bytes of
//!   strings are passed through unchanged;
//! - a [`Pat::Raw`] value (any kind) is delivered as text through the string
//!   callbacks, compactly re-serialized: whitespace outside strings dropped,
//!   strings decoded and re-escaped minimally (`\"`, `\\`, `\b`, `\f`,
//!   `\n`, `\r`, `\t`, other control characters as `\u00xx`, as Python's
//!   `json.dumps(v, separators=(",", ":"), ensure_ascii=False)` writes them),
//!   numbers and literals as written; inside it, only strings are validated
//!   (brackets are counted, as in a skipped value).

use memchr::memchr2;

pub use crate::field::Field;

/// Shape of the interesting part of a document.
pub enum Pat {
    /// A scalar of interest.
    Leaf(Field),
    /// An object; `Some(mark)` makes the scanner report entering and leaving it.
    Obj(Option<Field>, &'static [(&'static str, Pat)]),
    /// An array whose every element has the given shape.
    Arr(&'static Pat),
    /// The first alternative whose kind fits the value (`{` an Obj, `[` an
    /// Arr, anything else a Leaf, any value a Raw); e.g. a content that is a
    /// string or an array.
    Or(&'static [Pat]),
    /// Any value, delivered as its compact JSON text (a tool's parameter
    /// schema, to be counted as the tokens of that text).
    Raw(Field),
}

/// Resolve `Or` by the value's first byte.
fn pick(pat: Option<&'static Pat>, b: u8) -> Option<&'static Pat> {
    match pat {
        Some(Pat::Or(alts)) => alts.iter().find(|p| match p {
            Pat::Obj(..) => b == b'{',
            Pat::Arr(_) => b == b'[',
            Pat::Leaf(_) => b != b'{' && b != b'[',
            Pat::Raw(_) => true,
            Pat::Or(_) => false,
        }),
        other => other,
    }
}

/// Receiver of the values found at the pattern's leaves.
pub trait Sink {
    fn int(&mut self, _f: Field, _v: u64) {}
    fn boolean(&mut self, _f: Field, _v: bool) {}
    fn str_start(&mut self, _f: Field) {}
    fn str_piece(&mut self, _f: Field, _s: &[u8]) {}
    fn str_end(&mut self, _f: Field) {}
    fn enter(&mut self, _mark: Field) {}
    fn exit(&mut self, _mark: Field) {}
}

/// How a document ended, as reported by [`JsonScanner::end_doc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocEnd {
    /// Only whitespace was seen.
    Empty,
    /// One complete JSON value.
    Complete,
    /// Cut short, or a syntax error on a matched path.
    Broken,
}

/// Longest key compared (longer keys match nothing).
pub(crate) const KEY_MAX: usize = 64;
/// Longest bare token read (longer ones are not numbers).
pub(crate) const BARE_MAX: usize = 24;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Value,
    ArrFirst,
    ObjFirst,
    ObjKey,
    Colon,
    CommaOrEnd,
    Key,
    Leaf,
    Bare,
    Skip,
    /// Inside a raw value, outside its strings.
    Raw,
    /// Inside a string of a raw value.
    RawStr,
    /// A raw value that is a bare token (number or literal).
    RawBare,
    Done,
    Error,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    Unicode(u8, u16),
}

struct Frame {
    pat: &'static Pat,
}

pub struct JsonScanner {
    root: &'static Pat,
    stack: Vec<Frame>,
    st: St,
    /// Pattern of the value about to start (state Value/ArrFirst).
    value_pat: Option<&'static Pat>,
    key: [u8; KEY_MAX],
    key_len: usize,
    key_over: bool,
    bare: [u8; BARE_MAX],
    bare_len: usize,
    bare_over: bool,
    leaf: Field,
    leaf_bare: Option<Field>,
    esc: Esc,
    high: Option<u16>,
    skip_depth: u32,
    skip_in_str: bool,
    skip_esc: bool,
    /// Open brackets of the raw value being delivered.
    raw_depth: u32,
    seen: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn hex(b: u8) -> Option<u16> {
    (b as char).to_digit(16).map(|d| d as u16)
}

/// Parse a bare token as a non-negative integer without leading zeros.
pub fn parse_uint(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || (tok.len() > 1 && tok[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in tok {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

/// A count: an integer, or one written as a float with a zero fraction
/// (`4.0`, as Vertex AI writes `token_count`); no sign, no exponent.
pub fn parse_count(tok: &[u8]) -> Option<u64> {
    match tok.iter().position(|&b| b == b'.') {
        None => parse_uint(tok),
        Some(dot) => {
            let frac = &tok[dot + 1..];
            (!frac.is_empty() && frac.iter().all(|&b| b == b'0'))
                .then(|| parse_uint(&tok[..dot]))
                .flatten()
        }
    }
}

/// Position of the first `"` or `\` in `s`. Strings in these documents are
/// mostly short (keys, ids, small deltas), where memchr2's setup costs more
/// than the search: the first 32 bytes are tested 8 at a time in a u64
/// (SWAR: a byte equal to the target XORs to zero, and `(x - 0x01..) & !x &
/// 0x80..` sets the high bit of the lowest zero byte exactly, any false
/// positives being above it), the rest by memchr2.
pub(crate) fn find_quote_or_backslash(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() && i < 32 {
        let w = u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
        let q = w ^ (LO * b'"' as u64);
        let b = w ^ (LO * b'\\' as u64);
        let z = ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI;
        if z != 0 {
            return Some(i + (z.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr2(b'"', b'\\', &s[i..]).map(|n| i + n)
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Re-escape decoded string bytes for a raw value's compact text, in runs.
fn escape(bytes: &[u8], out: &mut dyn FnMut(&[u8])) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            8 => b"\\b",
            12 => b"\\f",
            0..=0x1f => {
                if start < i {
                    out(&bytes[start..i]);
                }
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        if start < i {
            out(&bytes[start..i]);
        }
        out(esc);
        start = i + 1;
    }
    if start < bytes.len() {
        out(&bytes[start..]);
    }
}

impl JsonScanner {
    pub fn new(root: &'static Pat) -> Self {
        JsonScanner {
            root,
            stack: Vec::with_capacity(8),
            st: St::Value,
            value_pat: Some(root),
            key: [0; KEY_MAX],
            key_len: 0,
            key_over: false,
            bare: [0; BARE_MAX],
            bare_len: 0,
            bare_over: false,
            leaf: 0,
            leaf_bare: None,
            esc: Esc::None,
            high: None,
            skip_depth: 0,
            skip_in_str: false,
            skip_esc: false,
            raw_depth: 0,
            seen: false,
        }
    }

    /// Forget the current document and expect a new one.
    pub fn reset(&mut self) {
        self.stack.clear();
        self.st = St::Value;
        self.value_pat = Some(self.root);
        self.seen = false;
        self.high = None;
        self.esc = Esc::None;
    }

    /// Close the current document (completing a trailing bare token) and reset.
    pub fn end_doc<S: Sink>(&mut self, sink: &mut S) -> DocEnd {
        if self.st == St::Bare {
            self.finish_bare(sink);
        } else if self.st == St::RawBare {
            sink.str_end(self.leaf);
            self.after_value();
        }
        let end = match self.st {
            St::Done => DocEnd::Complete,
            St::Value if !self.seen => DocEnd::Empty,
            _ => DocEnd::Broken,
        };
        self.reset();
        end
    }

    fn after_value(&mut self) {
        self.st = if self.stack.is_empty() {
            St::Done
        } else {
            St::CommaOrEnd
        };
    }

    fn lookup_key(&self) -> Option<&'static Pat> {
        if self.key_over {
            return None;
        }
        let key = &self.key[..self.key_len];
        match self.stack.last()?.pat {
            Pat::Obj(_, kids) => kids
                .iter()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, p)| p),
            _ => None,
        }
    }

    fn elem_pat(&self) -> Option<&'static Pat> {
        match self.stack.last()?.pat {
            Pat::Arr(elem) => Some(elem),
            _ => None,
        }
    }

    fn close<S: Sink>(&mut self, sink: &mut S) {
        if let Some(Frame {
            pat: Pat::Obj(Some(mark), _),
        }) = self.stack.pop()
        {
            sink.exit(*mark);
        }
        self.after_value();
    }

    fn finish_bare<S: Sink>(&mut self, sink: &mut S) {
        if let (Some(f), false) = (self.leaf_bare, self.bare_over) {
            let tok = &self.bare[..self.bare_len];
            match tok {
                b"true" => sink.boolean(f, true),
                b"false" => sink.boolean(f, false),
                _ => {
                    if let Some(v) = parse_count(tok) {
                        sink.int(f, v)
                    }
                }
            }
        }
        self.after_value();
    }

    /// Start a value at byte `b`; returns false on a syntax error.
    fn start_value<S: Sink>(&mut self, b: u8, sink: &mut S) -> bool {
        let pat = pick(self.value_pat, b);
        self.seen = true;
        if let Some(Pat::Raw(f)) = pat {
            let st = match b {
                b'"' => St::RawStr,
                b'{' | b'[' => St::Raw,
                _ if is_bare(b) => St::RawBare,
                _ => return false,
            };
            self.leaf = *f;
            self.raw_depth = (st == St::Raw) as u32;
            self.esc = Esc::None;
            self.high = None;
            sink.str_start(*f);
            sink.str_piece(*f, &[b]);
            self.st = st;
            return true;
        }
        match b {
            b'{' => match pat {
                Some(p @ Pat::Obj(mark, _)) => {
                    self.stack.push(Frame { pat: p });
                    if let Some(m) = mark {
                        sink.enter(*m);
                    }
                    self.st = St::ObjFirst;
                }
                _ => self.start_skip(1, false),
            },
            b'[' => match pat {
                Some(p @ Pat::Arr(elem)) => {
                    self.stack.push(Frame { pat: p });
                    self.value_pat = Some(elem);
                    self.st = St::ArrFirst;
                }
                _ => self.start_skip(1, false),
            },
            b'"' => match pat {
                Some(Pat::Leaf(f)) => {
                    self.leaf = *f;
                    self.esc = Esc::None;
                    self.high = None;
                    sink.str_start(*f);
                    self.st = St::Leaf;
                }
                _ => self.start_skip(0, true),
            },
            _ if is_bare(b) => {
                self.leaf_bare = match pat {
                    Some(Pat::Leaf(f)) => Some(*f),
                    _ => None,
                };
                self.bare[0] = b;
                self.bare_len = 1;
                self.bare_over = false;
                self.st = St::Bare;
            }
            _ => return false,
        }
        true
    }

    fn start_skip(&mut self, depth: u32, in_str: bool) {
        self.skip_depth = depth;
        self.skip_in_str = in_str;
        self.skip_esc = false;
        self.st = St::Skip;
    }

    /// Emit decoded bytes of the current string (key or leaf).
    fn emit<S: Sink>(&mut self, bytes: &[u8], sink: &mut S) {
        if self.st == St::Key {
            let room = KEY_MAX - self.key_len;
            if bytes.len() > room {
                self.key_over = true;
            } else {
                self.key[self.key_len..self.key_len + bytes.len()].copy_from_slice(bytes);
                self.key_len += bytes.len();
            }
        } else if self.st == St::RawStr {
            let f = self.leaf;
            escape(bytes, &mut |p| sink.str_piece(f, p));
        } else {
            sink.str_piece(self.leaf, bytes);
        }
    }

    fn flush_high<S: Sink>(&mut self, sink: &mut S) {
        if self.high.take().is_some() {
            self.emit(REPLACEMENT, sink);
        }
    }

    fn emit_char<S: Sink>(&mut self, c: char, sink: &mut S) {
        let mut buf = [0u8; 4];
        let s = c.encode_utf8(&mut buf);
        self.emit(s.as_bytes(), sink);
    }

    fn emit_unit<S: Sink>(&mut self, u: u16, sink: &mut S) {
        match u {
            0xD800..=0xDBFF => {
                self.flush_high(sink);
                self.high = Some(u);
            }
            0xDC00..=0xDFFF => match self.high.take() {
                Some(h) => {
                    let c = 0x10000 + (((h as u32) - 0xD800) << 10) + ((u as u32) - 0xDC00);
                    self.emit_char(char::from_u32(c).unwrap_or('\u{FFFD}'), sink);
                }
                None => self.emit(REPLACEMENT, sink),
            },
            _ => {
                self.flush_high(sink);
                self.emit_char(char::from_u32(u as u32).unwrap_or('\u{FFFD}'), sink);
            }
        }
    }

    /// Consume string bytes from `data[i..]`; returns the new index.
    fn string<S: Sink>(&mut self, data: &[u8], mut i: usize, sink: &mut S) -> usize {
        while i < data.len() {
            match self.esc {
                Esc::None => {
                    let rest = &data[i..];
                    match find_quote_or_backslash(rest) {
                        None => {
                            if !rest.is_empty() {
                                self.flush_high(sink);
                                self.emit(rest, sink);
                            }
                            return data.len();
                        }
                        Some(n) => {
                            if n > 0 {
                                self.flush_high(sink);
                                self.emit(&rest[..n], sink);
                            }
                            i += n + 1;
                            if rest[n] == b'\\' {
                                self.esc = Esc::Backslash;
                            } else {
                                self.flush_high(sink);
                                if self.st == St::Key {
                                    self.st = St::Colon;
                                } else if self.st == St::RawStr {
                                    sink.str_piece(self.leaf, b"\"");
                                    if self.raw_depth == 0 {
                                        sink.str_end(self.leaf);
                                        self.after_value();
                                    } else {
                                        self.st = St::Raw;
                                    }
                                } else {
                                    sink.str_end(self.leaf);
                                    self.after_value();
                                }
                                return i;
                            }
                        }
                    }
                }
                Esc::Backslash => {
                    let b = data[i];
                    i += 1;
                    self.esc = Esc::None;
                    let c = match b {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            self.esc = Esc::Unicode(0, 0);
                            continue;
                        }
                        _ => {
                            self.st = St::Error;
                            return data.len();
                        }
                    };
                    self.flush_high(sink);
                    self.emit(&[c], sink);
                }
                Esc::Unicode(n, acc) => {
                    let Some(d) = hex(data[i]) else {
                        self.st = St::Error;
                        return data.len();
                    };
                    i += 1;
                    let acc = (acc << 4) | d;
                    if n == 3 {
                        self.esc = Esc::None;
                        self.emit_unit(acc, sink);
                    } else {
                        self.esc = Esc::Unicode(n + 1, acc);
                    }
                }
            }
        }
        i
    }

    /// Skip an uninteresting value; returns the new index.
    fn skip<S: Sink>(&mut self, data: &[u8], mut i: usize, _sink: &mut S) -> usize {
        while i < data.len() {
            if self.skip_in_str {
                if self.skip_esc {
                    self.skip_esc = false;
                    i += 1;
                    continue;
                }
                match find_quote_or_backslash(&data[i..]) {
                    None => return data.len(),
                    Some(n) => {
                        i += n + 1;
                        if data[i - 1] == b'\\' {
                            self.skip_esc = true;
                        } else {
                            self.skip_in_str = false;
                            if self.skip_depth == 0 {
                                self.after_value();
                                return i;
                            }
                        }
                    }
                }
            } else {
                match data[i..]
                    .iter()
                    .position(|&b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'))
                {
                    None => return data.len(),
                    Some(n) => {
                        i += n + 1;
                        match data[i - 1] {
                            b'"' => self.skip_in_str = true,
                            b'{' | b'[' => self.skip_depth += 1,
                            _ => {
                                self.skip_depth -= 1;
                                if self.skip_depth == 0 {
                                    self.after_value();
                                    return i;
                                }
                            }
                        }
                    }
                }
            }
        }
        i
    }

    /// A raw value outside its strings; returns the new index.
    fn raw<S: Sink>(&mut self, data: &[u8], mut i: usize, sink: &mut S) -> usize {
        while i < data.len() {
            let rest = &data[i..];
            let n = rest
                .iter()
                .position(|&b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']') || is_ws(b))
                .unwrap_or(rest.len());
            if n > 0 {
                sink.str_piece(self.leaf, &rest[..n]);
            }
            i += n;
            let Some(&b) = data.get(i) else { break };
            i += 1;
            match b {
                b'"' => {
                    sink.str_piece(self.leaf, b"\"");
                    self.esc = Esc::None;
                    self.high = None;
                    self.st = St::RawStr;
                    return i;
                }
                b'{' | b'[' => {
                    self.raw_depth += 1;
                    sink.str_piece(self.leaf, &[b]);
                }
                b'}' | b']' => {
                    sink.str_piece(self.leaf, &[b]);
                    self.raw_depth -= 1;
                    if self.raw_depth == 0 {
                        sink.str_end(self.leaf);
                        self.after_value();
                        return i;
                    }
                }
                _ => {} // whitespace
            }
        }
        i
    }

    /// A raw value that is a bare token; returns the new index.
    fn raw_bare<S: Sink>(&mut self, data: &[u8], i: usize, sink: &mut S) -> usize {
        let rest = &data[i..];
        let n = rest.iter().position(|&b| !is_bare(b)).unwrap_or(rest.len());
        if n > 0 {
            sink.str_piece(self.leaf, &rest[..n]);
        }
        if n < rest.len() {
            sink.str_end(self.leaf);
            self.after_value();
        }
        i + n
    }

    /// Feed the next piece of the document.
    pub fn feed<S: Sink>(&mut self, data: &[u8], sink: &mut S) {
        let mut i = 0;
        while i < data.len() {
            match self.st {
                St::Error => return,
                St::Key | St::Leaf | St::RawStr => {
                    i = self.string(data, i, sink);
                    continue;
                }
                St::Raw => {
                    i = self.raw(data, i, sink);
                    continue;
                }
                St::RawBare => {
                    i = self.raw_bare(data, i, sink);
                    continue;
                }
                St::Skip => {
                    i = self.skip(data, i, sink);
                    continue;
                }
                St::Bare => {
                    // The token's bytes in this chunk in one run, then one copy
                    // (what fits of them; a longer token is no number).
                    let rest = &data[i..];
                    let n = rest.iter().position(|&b| !is_bare(b)).unwrap_or(rest.len());
                    let room = BARE_MAX - self.bare_len;
                    let take = n.min(room);
                    self.bare[self.bare_len..self.bare_len + take].copy_from_slice(&rest[..take]);
                    self.bare_len += take;
                    self.bare_over |= n > room;
                    i += n;
                    if i < data.len() {
                        self.finish_bare(sink);
                    }
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            if is_ws(b) {
                continue;
            }
            let ok = match self.st {
                St::Value => self.start_value(b, sink),
                St::ArrFirst => {
                    if b == b']' {
                        self.close(sink);
                        true
                    } else {
                        self.start_value(b, sink)
                    }
                }
                St::ObjFirst | St::ObjKey => {
                    if b == b'"' {
                        self.key_len = 0;
                        self.key_over = false;
                        self.esc = Esc::None;
                        self.high = None;
                        self.st = St::Key;
                        // Fast path: the key ends in this chunk without an escape
                        // and fits: take it whole (what `string` would collect).
                        let rest = &data[i..];
                        if let Some(n) = find_quote_or_backslash(rest) {
                            if rest[n] == b'"' && n <= KEY_MAX {
                                self.key[..n].copy_from_slice(&rest[..n]);
                                self.key_len = n;
                                self.st = St::Colon;
                                i += n + 1;
                            }
                        }
                        true
                    } else if b == b'}' && self.st == St::ObjFirst {
                        self.close(sink);
                        true
                    } else {
                        false
                    }
                }
                St::Colon if b == b':' => {
                    self.value_pat = self.lookup_key();
                    self.st = St::Value;
                    true
                }
                St::CommaOrEnd => {
                    let in_obj = matches!(self.stack.last().map(|f| f.pat), Some(Pat::Obj(..)));
                    match (b, in_obj) {
                        (b',', true) => {
                            self.st = St::ObjKey;
                            true
                        }
                        (b',', false) => {
                            self.value_pat = self.elem_pat();
                            self.st = St::Value;
                            true
                        }
                        (b'}', true) | (b']', false) => {
                            self.close(sink);
                            true
                        }
                        _ => false,
                    }
                }
                _ => false, // Done: only whitespace may follow
            };
            if !ok {
                self.st = St::Error;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec(Vec<String>);
    impl Sink for Rec {
        fn int(&mut self, f: Field, v: u64) {
            self.0.push(format!("int {f} {v}"));
        }
        fn boolean(&mut self, f: Field, v: bool) {
            self.0.push(format!("bool {f} {v}"));
        }
        fn str_start(&mut self, f: Field) {
            self.0.push(format!("str {f} "));
        }
        fn str_piece(&mut self, _f: Field, s: &[u8]) {
            self.0
                .last_mut()
                .unwrap()
                .push_str(&String::from_utf8_lossy(s));
        }
        fn enter(&mut self, m: Field) {
            self.0.push(format!("enter {m}"));
        }
        fn exit(&mut self, m: Field) {
            self.0.push(format!("exit {m}"));
        }
    }

    static P: Pat = Pat::Obj(
        None,
        &[
            ("n", Pat::Leaf(1)),
            ("s", Pat::Leaf(2)),
            ("o", Pat::Obj(Some(9), &[("b", Pat::Leaf(3))])),
            ("a", Pat::Arr(&Pat::Obj(None, &[("t", Pat::Leaf(4))]))),
        ],
    );

    fn run(doc: &[u8], step: usize) -> (Vec<String>, DocEnd) {
        let mut sc = JsonScanner::new(&P);
        let mut rec = Rec::default();
        for c in doc.chunks(step.max(1)) {
            sc.feed(c, &mut rec);
        }
        let end = sc.end_doc(&mut rec);
        (rec.0, end)
    }

    #[test]
    fn quote_search_finds_the_first_quote_or_backslash_at_every_position() {
        for len in 0..80 {
            for pos in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut s = vec![b'a'; len];
                    // bytes near the targets (0x21, 0x23, 0x5b, 0x5d, 0xa2, 0xdc) must not match
                    for (k, b) in s.iter_mut().enumerate() {
                        *b = [b'a', 0x21, 0x23, 0x5b, 0x5d, 0xa2, 0xdc, 0][k % 8];
                    }
                    if pos < len {
                        s[pos] = c;
                        if pos + 1 < len {
                            s[pos + 1] = b'"'; // a later match never wins
                        }
                    }
                    let want = s.iter().position(|&b| b == b'"' || b == b'\\');
                    assert_eq!(find_quote_or_backslash(&s), want, "len {len} pos {pos}");
                }
            }
        }
    }

    #[test]
    fn values_at_paths_under_every_split() {
        let doc = br#" {"x":{"n":5,"s":"no"},"n":18446744073709551615,"s":"h\u00e9\ud83d\ude00\"","o":{"b":true,"z":[1,{"b":2}]},"a":[{"t":"p"},7,{"t":"q","u":"]"}],"q":"}"} "#;
        let want = vec![
            "int 1 18446744073709551615",
            "str 2 hé😀\"",
            "enter 9",
            "bool 3 true",
            "exit 9",
            "str 4 p",
            "str 4 q",
        ];
        for step in 1..doc.len() {
            let (got, end) = run(doc, step);
            assert_eq!(got, want, "step {step}");
            assert_eq!(end, DocEnd::Complete);
        }
    }

    #[test]
    fn leaves_ignore_non_integers_and_overflow() {
        let (got, end) = run(
            br#"{"n":1.5,"n":-1,"n":01,"n":18446744073709551616,"n":null,"n":{"n":1},"n":2.,"n":1e3,"n":7}"#,
            3,
        );
        assert_eq!(got, vec!["int 1 7"]);
        let (got, _) = run(br#"{"n":4.0,"n":12.000,"n":-0.0,"n":0.00}"#, 1);
        assert_eq!(got, vec!["int 1 4", "int 1 12", "int 1 0"]);
        assert_eq!(end, DocEnd::Complete);
    }

    #[test]
    fn errors_stop_the_document_but_keep_earlier_values() {
        let (got, end) = run(br#"{"n":1,"s" "x","n":2}"#, 1);
        assert_eq!(got, vec!["int 1 1"]);
        assert_eq!(end, DocEnd::Broken);
        let (got, end) = run(br#"{"n":3"#, 2);
        assert_eq!(got, vec!["int 1 3"]);
        assert_eq!(end, DocEnd::Broken);
        let (_, end) = run(b"  \n", 1);
        assert_eq!(end, DocEnd::Empty);
        let (_, end) = run(b"[DONE]", 1);
        assert_eq!(end, DocEnd::Complete);
        let (got, end) = run(br#"{"s":"\x"}"#, 1);
        assert_eq!(got, vec!["str 2 "]);
        assert_eq!(end, DocEnd::Broken);
    }

    #[test]
    fn lone_surrogates_become_replacement_chars() {
        let (got, _) = run(br#"{"s":"a\ud800b\udc00c\ud800"}"#, 1);
        assert_eq!(got, vec!["str 2 a\u{FFFD}b\u{FFFD}c\u{FFFD}"]);
    }

    #[test]
    fn escaped_and_long_keys() {
        let long = format!(r#"{{"{}":1,"\u006e":4}}"#, "n".repeat(100));
        let (got, _) = run(long.as_bytes(), 1);
        assert_eq!(got, vec!["int 1 4"]);
    }

    /// Every (field, text, ended) string delivered, for raw values.
    #[derive(Default)]
    struct Texts(Vec<(Field, Vec<u8>, bool)>);
    impl Sink for Texts {
        fn str_start(&mut self, f: Field) {
            self.0.push((f, Vec::new(), false));
        }
        fn str_piece(&mut self, f: Field, s: &[u8]) {
            let last = self.0.last_mut().unwrap();
            assert!(last.0 == f && !last.2);
            last.1.extend_from_slice(s);
        }
        fn str_end(&mut self, f: Field) {
            let last = self.0.last_mut().unwrap();
            assert!(last.0 == f && !last.2);
            last.2 = true;
        }
    }

    static RAW: Pat = Pat::Obj(
        None,
        &[
            ("r", Pat::Raw(5)),
            ("a", Pat::Arr(&Pat::Raw(6))),
            ("o", Pat::Or(&[Pat::Leaf(7), Pat::Raw(8)])),
        ],
    );

    fn raw_run(doc: &[u8], step: usize) -> (Vec<(Field, String, bool)>, DocEnd) {
        let mut sc = JsonScanner::new(&RAW);
        let mut t = Texts::default();
        for c in doc.chunks(step.max(1)) {
            sc.feed(c, &mut t);
        }
        let end = sc.end_doc(&mut t);
        let got =
            t.0.into_iter()
                .map(|(f, v, e)| (f, String::from_utf8(v).unwrap(), e))
                .collect();
        (got, end)
    }

    #[test]
    fn raw_values_are_delivered_compactly_under_every_split() {
        let doc = br#" { "r" : { "a" : [ 1 , 2.5e3, true, null, "x\"y\\z\/\n\t\u00e9\ud83d\ude00\u0001\b\f\r" ] ,
            "b": { } , "c" : [ ] } , "z": {"r": 1}, "a": [ "s" , 12 , -3, [ ] , {"]": "}"} ],
            "o": "leaf", "o": { "k": [ "v" ] }, "r": 7 , "r": "\ud800x" } "#;
        let want = vec![
            (
                5,
                "{\"a\":[1,2.5e3,true,null,\"x\\\"y\\\\z/\\n\\té😀\\u0001\\b\\f\\r\"],\"b\":{},\"c\":[]}"
                    .to_string(),
                true,
            ),
            (6, "\"s\"".into(), true),
            (6, "12".into(), true),
            (6, "-3".into(), true),
            (6, "[]".into(), true),
            (6, "{\"]\":\"}\"}".into(), true),
            (7, "leaf".into(), true),
            (8, "{\"k\":[\"v\"]}".into(), true),
            (5, "7".into(), true),
            (5, "\"\u{FFFD}x\"".into(), true),
        ];
        for step in 1..doc.len() {
            let (got, end) = raw_run(doc, step);
            assert_eq!(got, want, "step {step}");
            assert_eq!(end, DocEnd::Complete);
        }
    }

    #[test]
    fn raw_values_stop_on_bad_strings_and_end_with_the_document() {
        let (got, end) = raw_run(br#"{"r": {"a": "\x"}, "a": [1]}"#, 1);
        assert_eq!(got, vec![(5, "{\"a\":\"".to_string(), false)]);
        assert_eq!(end, DocEnd::Broken);
        let (got, end) = raw_run(br#"{"r": {"a": [1, 2"#, 3);
        assert_eq!(got, vec![(5, "{\"a\":[1,2".to_string(), false)]);
        assert_eq!(end, DocEnd::Broken);
        let (got, end) = raw_run(br#"{"r": }"#, 1);
        assert!(got.is_empty());
        assert_eq!(end, DocEnd::Broken);
        // a bare raw value at the end of the document
        static TOP: Pat = Pat::Raw(3);
        let mut sc = JsonScanner::new(&TOP);
        let mut t = Texts::default();
        sc.feed(b" 12", &mut t);
        sc.feed(b"34 ", &mut t);
        assert_eq!(sc.end_doc(&mut t), DocEnd::Complete);
        sc.feed(b"5e1", &mut t);
        assert_eq!(sc.end_doc(&mut t), DocEnd::Complete);
        assert_eq!(
            t.0,
            vec![(3, b"1234".to_vec(), true), (3, b"5e1".to_vec(), true)]
        );
    }
}
