//! Event templates: the fast path for streams whose events differ in one string.
//!
//! A provider writes a stream's events from one template: `data: {"id":"chatcmpl-B",...,"delta":
//! {"content":" word"},...}` again and again, only the text changing. The JSON scanner's calls into
//! its [`Sink`] are a function of a document's bytes alone (it starts each document from a reset
//! state), so an event whose bytes are the previous event's with the content of one string replaced
//! makes the same calls with that string's piece replaced. A [`Tape`] records the calls one whole
//! event line made (and where in the line each string piece lay); [`Tape::replay`] checks that the
//! next line is the recorded one with one reported string's content changed, and if so makes the
//! calls the scanner would make, without scanning:
//!
//! - the bytes before the string's content are the recorded line's, byte for byte;
//! - the new content has no `"` or `\` (so the scanner would report it as one raw piece, or none
//!   when empty, as it did the recorded one: a string the scanner reported as exactly one piece taken
//!   from the line, between its start and its end);
//! - the bytes from the closing quote on are the recorded line's, byte for byte.
//!
//! Anything else (another difference, an escape, a line split across chunks, a longer line) goes the
//! scanner's way and is recorded for the next event. The results are the scanner's by construction;
//! `tests/test_cases.py` and the property tests check them against the Python fallback, which has no
//! templates.

use crate::field::Field;
use crate::json::{find_quote_or_backslash, DocEnd, Sink};
use memchr::memchr2;

/// Longest event line recorded (longer ones are scanned as they come, never copied).
pub const LINE_MAX: usize = 4096;

#[derive(Clone, Copy)]
enum Op {
    Int(Field, u64),
    Bool(Field, bool),
    Start(Field),
    /// A piece at `off..off + len` of the line.
    Line(Field, u32, u32),
    /// A piece the scanner made (an escape's decoding): `own[start..start + len]`.
    Own(Field, u32, u32),
    End(Field),
    Enter(Field),
    Exit(Field),
}

/// The calls one event line made, and the line.
#[derive(Default)]
pub struct Tape {
    ops: Vec<Op>,
    own: Vec<u8>,
    line: Vec<u8>,
    end: Option<DocEnd>,
    /// the op, place and length of the string piece that varied in the last event replayed whole
    varied: Option<(usize, usize, usize)>,
}

impl Tape {
    /// Start recording the calls made while `line` (the whole document of the event about to be
    /// scanned) is fed to the scanner; `finish` ends the recording.
    pub fn record<'a, S: Sink>(&'a mut self, line: &[u8], sink: &'a mut S) -> Recorder<'a, S> {
        self.ops.clear();
        self.own.clear();
        self.end = None;
        self.varied = None;
        Recorder {
            tape: self,
            sink,
            base: line.as_ptr() as usize,
            len: line.len(),
        }
    }

    /// The recorded event ended so, and `line` (taken: swapped with the tape's old one) was it; a tape
    /// is replayed only for a complete document.
    pub fn finish(&mut self, line: &mut Vec<u8>, end: DocEnd) {
        std::mem::swap(&mut self.line, line);
        self.end = Some(end);
    }

    /// The recorded line.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The recording is of a complete document.
    pub fn complete(&self) -> bool {
        self.end == Some(DocEnd::Complete)
    }

    /// Every string piece recorded is the line's own bytes (no escape was decoded).
    pub fn plain(&self) -> bool {
        self.own.is_empty()
    }

    /// Make the calls `line` would make, if it is the recorded line with one reported string's content
    /// replaced; then it is the recorded line (taken: swapped with the tape's old one). Returns how its
    /// document ended, or None (nothing called, `line` untouched).
    pub fn replay<S: Sink>(&mut self, line: &mut Vec<u8>, sink: &mut S) -> Option<DocEnd> {
        let end = self.end?;
        if end != DocEnd::Complete {
            return None;
        }
        let prev = &self.line[..];
        let p = common_prefix(prev, line);
        if p == prev.len() && p == line.len() {
            self.calls(None, sink);
            return Some(end);
        }
        let (k, a, n) = self.varying(p)?;
        if line.len() < a {
            return None;
        }
        let e = a + find_quote_or_backslash(&line[a..])?;
        if line[e] != b'"' || line[e..] != prev[a + n..] {
            return None;
        }
        let delta = (e - a) as i64 - n as i64;
        self.varied = None;
        for (i, op) in self.ops.iter_mut().enumerate() {
            match *op {
                Op::Line(g, o, _) if i == k => {
                    if e > a {
                        sink.str_piece(g, &line[a..e]);
                    }
                    *op = Op::Line(g, o, (e - a) as u32);
                }
                Op::Line(g, o, l) => {
                    let o = if i > k { (o as i64 + delta) as u32 } else { o };
                    if l > 0 {
                        sink.str_piece(g, &line[o as usize..(o + l) as usize]);
                    }
                    *op = Op::Line(g, o, l);
                }
                other => call(other, &self.own, sink),
            }
        }
        std::mem::swap(&mut self.line, line);
        Some(end)
    }

    /// The recorded string whose content holds the line's first difference, at `p`: one piece from
    /// the line, alone between its start and its end, and quoted there; returns its op and place.
    fn varying(&self, p: usize) -> Option<(usize, usize, usize)> {
        let k = (1..self.ops.len().saturating_sub(1)).find(|&k| match self.ops[k] {
            Op::Line(f, off, len) => {
                let (a, n) = (off as usize, len as usize);
                a <= p
                    && p <= a + n
                    && matches!(self.ops[k - 1], Op::Start(g) if g == f)
                    && matches!(self.ops[k + 1], Op::End(g) if g == f)
            }
            _ => false,
        })?;
        let Op::Line(_, off, len) = self.ops[k] else {
            return None;
        };
        let (a, n) = (off as usize, len as usize);
        if a == 0 || self.line.get(a - 1) != Some(&b'"') || self.line.get(a + n) != Some(&b'"') {
            return None;
        }
        Some((k, a, n))
    }

    /// The recorded calls, the pieces read from the recorded line; with `swap` = (k, content), op k's
    /// piece is `content` instead (none when empty).
    #[inline(always)]
    fn calls<S: Sink>(&self, swap: Option<(usize, &[u8])>, sink: &mut S) {
        let (k, content) = swap.unwrap_or((usize::MAX, &[]));
        let (before, after) = self.ops.split_at(k.min(self.ops.len()));
        self.run(before, sink);
        if let Some((Op::Line(g, _, _), rest)) = after.split_first() {
            if !content.is_empty() {
                sink.str_piece(*g, content);
            }
            self.run(rest, sink);
        }
    }

    #[inline(always)]
    fn run<S: Sink>(&self, ops: &[Op], sink: &mut S) {
        for op in ops {
            match *op {
                Op::Line(g, o, l) => {
                    if l > 0 {
                        sink.str_piece(g, &self.line[o as usize..(o + l) as usize]);
                    }
                }
                other => call(other, &self.own, sink),
            }
        }
    }

    /// Whole events: `event` is a recorded SSE event (its lines and the blank line that ended it) whose
    /// one data line, at `at`, is the tape's line, and `data` starts where the framer is between
    /// events. If `data` begins with `event` with one reported string's content replaced by bytes
    /// without `"`, `\`, CR or LF (so the framer would see the same lines, and the data line fit the
    /// tape), make the calls that event would make and return its length in `data`; else None, nothing
    /// called. The tape is unchanged.
    pub fn replay_event<S: Sink>(
        &mut self,
        event: &[u8],
        at: usize,
        data: &[u8],
        sink: &mut S,
    ) -> Option<usize> {
        if self.end != Some(DocEnd::Complete) {
            return None;
        }
        // the string that varied last time, first: one compare of the bytes before it
        if let Some((k, a, n)) = self.varied {
            let a = at + a;
            if data.get(..a) == Some(&event[..a]) {
                if let Some(len) = self.replay_piece(event, data, k, a, a + n, sink) {
                    return Some(len);
                }
            }
        }
        let p = common_prefix(event, data);
        if p == event.len() {
            self.calls(None, sink);
            return Some(p);
        }
        let (k, a, n) = self.varying(p.checked_sub(at)?)?;
        self.varied = Some((k, a, n));
        self.replay_piece(event, data, k, at + a, at + a + n, sink)
    }

    /// `data` has the bytes of `event` up to `a`, where op k's piece `event[a..b]` starts: if a content
    /// without `"`, `\`, CR or LF, then `event[b..]`, follow, the calls with that content instead.
    #[inline(always)]
    fn replay_piece<S: Sink>(
        &self,
        event: &[u8],
        data: &[u8],
        k: usize,
        a: usize,
        b: usize,
        sink: &mut S,
    ) -> Option<usize> {
        let e = a + find_quote_or_backslash(data.get(a..)?)?;
        let tail = &event[b..];
        let content = &data[a..e];
        if data[e] != b'"'
            || memchr2(b'\r', b'\n', content).is_some()
            || data.get(e..e + tail.len())? != tail
        {
            return None;
        }
        self.calls(Some((k, content)), sink);
        Some(e + tail.len())
    }
}

#[inline(always)]
fn call<S: Sink>(op: Op, own: &[u8], sink: &mut S) {
    match op {
        Op::Int(f, v) => sink.int(f, v),
        Op::Bool(f, v) => sink.boolean(f, v),
        Op::Start(f) => sink.str_start(f),
        Op::Own(f, s, l) => sink.str_piece(f, &own[s as usize..(s + l) as usize]),
        Op::End(f) => sink.str_end(f),
        Op::Enter(m) => sink.enter(m),
        Op::Exit(m) => sink.exit(m),
        Op::Line(..) => unreachable!("line pieces are replayed from the line"),
    }
}

/// Length of the common prefix of `a` and `b`, 8 bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A sink that passes every call on and records it on the tape.
pub struct Recorder<'a, S: Sink> {
    tape: &'a mut Tape,
    sink: &'a mut S,
    /// the address and length of the line being fed: a piece inside it is recorded by its place
    base: usize,
    len: usize,
}

impl<S: Sink> Sink for Recorder<'_, S> {
    fn int(&mut self, f: Field, v: u64) {
        self.tape.ops.push(Op::Int(f, v));
        self.sink.int(f, v);
    }
    fn boolean(&mut self, f: Field, v: bool) {
        self.tape.ops.push(Op::Bool(f, v));
        self.sink.boolean(f, v);
    }
    fn str_start(&mut self, f: Field) {
        self.tape.ops.push(Op::Start(f));
        self.sink.str_start(f);
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        let at = s.as_ptr() as usize;
        let op = if at >= self.base && at + s.len() <= self.base + self.len {
            Op::Line(f, (at - self.base) as u32, s.len() as u32)
        } else {
            let start = self.tape.own.len() as u32;
            self.tape.own.extend_from_slice(s);
            Op::Own(f, start, s.len() as u32)
        };
        self.tape.ops.push(op);
        self.sink.str_piece(f, s);
    }
    fn str_end(&mut self, f: Field) {
        self.tape.ops.push(Op::End(f));
        self.sink.str_end(f);
    }
    fn enter(&mut self, mark: Field) {
        self.tape.ops.push(Op::Enter(mark));
        self.sink.enter(mark);
    }
    fn exit(&mut self, mark: Field) {
        self.tape.ops.push(Op::Exit(mark));
        self.sink.exit(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_at_every_position() {
        let a = b"0123456789abcdefghij";
        for i in 0..a.len() {
            let mut b = a.to_vec();
            b[i] = b'#';
            assert_eq!(common_prefix(a, &b), i);
        }
        assert_eq!(common_prefix(a, a), a.len());
        assert_eq!(common_prefix(a, &a[..5]), 5);
    }
}
