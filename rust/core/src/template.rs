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
}

impl Tape {
    /// Start recording the calls made while `line` (the whole document of the event about to be
    /// scanned) is fed to the scanner; `finish` ends the recording.
    pub fn record<'a, S: Sink>(&'a mut self, line: &[u8], sink: &'a mut S) -> Recorder<'a, S> {
        self.ops.clear();
        self.own.clear();
        self.end = None;
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
            self.replay_same(line, sink);
            return Some(end);
        }
        // the recorded string whose content holds the first difference: one piece from the line,
        // alone between its start and its end
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
        if a == 0
            || prev.get(a - 1) != Some(&b'"')
            || prev.get(a + n) != Some(&b'"')
            || line.len() < a
        {
            return None;
        }
        let e = a + find_quote_or_backslash(&line[a..])?;
        if line[e] != b'"' || line[e..] != prev[a + n..] {
            return None;
        }
        let delta = (e - a) as i64 - n as i64;
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

    fn replay_same<S: Sink>(&self, line: &[u8], sink: &mut S) {
        for op in &self.ops {
            match *op {
                Op::Line(g, o, l) => {
                    if l > 0 {
                        sink.str_piece(g, &line[o as usize..(o + l) as usize]);
                    }
                }
                other => call(other, &self.own, sink),
            }
        }
    }
}

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
