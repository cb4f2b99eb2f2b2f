//! Server-sent events framing (WHATWG HTML, "server-sent events").
//!
//! Streams the value of every `data` line to an [`SseHandler`] as it
//! arrives, so no event is ever buffered: memory is a few bytes whatever the
//! event size. Lines end with CRLF, LF or a lone CR (a CR at the end of one
//! chunk and an LF at the start of the next are one line end). `field:value`
//! drops one optional space after the colon; a line starting with `:` is a
//! comment; a line without a colon is a field with an empty value; several
//! `data` lines of one event are joined with `\n`; a blank line dispatches
//! the event if it had data. Fields other than `data` are ignored.

use memchr::memchr2;

pub trait SseHandler {
    /// A `data` line begins; `first` is true for the first one of an event.
    fn data_start(&mut self, first: bool);
    /// Bytes of the current `data` line's value; `line_end`: the line ends after them.
    fn data(&mut self, bytes: &[u8], line_end: bool);
    /// A blank line ended an event that had data.
    fn dispatch(&mut self);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    /// Reading a field name (empty at line start).
    Name,
    /// Just after `data:`; one space may follow.
    AfterColon,
    Data,
    Ignore,
}

pub struct SseFramer {
    st: St,
    name: [u8; 4],
    name_len: usize,
    /// More than 4 bytes of name, or not a prefix of "data".
    name_other: bool,
    cr: bool,
    has_data: bool,
}

impl Default for SseFramer {
    fn default() -> Self {
        SseFramer {
            st: St::Name,
            name: [0; 4],
            name_len: 0,
            name_other: false,
            cr: false,
            has_data: false,
        }
    }
}

impl SseFramer {
    /// True when an event has data lines but was not dispatched yet.
    pub fn pending(&self) -> bool {
        self.has_data
    }

    fn is_data_name(&self) -> bool {
        !self.name_other && &self.name[..self.name_len] == b"data"
    }

    fn data_line<H: SseHandler>(&mut self, h: &mut H) {
        h.data_start(!self.has_data);
        self.has_data = true;
    }

    fn line_end(&mut self, b: u8) {
        self.cr = b == b'\r';
        self.st = St::Name;
        self.name_len = 0;
        self.name_other = false;
    }

    /// True between events: at a line start, no event begun, no CR waiting for its LF. From here the
    /// framer's calls on an event depend on the event's bytes alone.
    pub fn clean(&self) -> bool {
        self.st == St::Name && self.name_len == 0 && !self.name_other && !self.cr && !self.has_data
    }

    #[cfg(test)]
    pub fn feed<H: SseHandler>(&mut self, data: &[u8], h: &mut H) {
        let mut i = 0;
        while i < data.len() {
            i += self.feed_event(&data[i..], h);
        }
    }

    /// Feed `data` up to the end of the first event dispatched in it (the LF of a CRLF included) or
    /// to its end; returns the bytes taken.
    pub fn feed_event<H: SseHandler>(&mut self, data: &[u8], h: &mut H) -> usize {
        let mut i = 0;
        while i < data.len() {
            if self.cr {
                self.cr = false;
                if data[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.st {
                St::Name => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\r' | b'\n' => {
                            if self.name_len == 0 && !self.name_other {
                                if self.has_data {
                                    self.has_data = false;
                                    h.dispatch();
                                    self.line_end(b);
                                    if self.cr && data.get(i) == Some(&b'\n') {
                                        self.cr = false;
                                        i += 1;
                                    }
                                    return i;
                                }
                            } else if self.is_data_name() {
                                self.data_line(h);
                            }
                            self.line_end(b);
                        }
                        b':' => {
                            if self.is_data_name() {
                                self.data_line(h);
                                self.st = St::AfterColon;
                            } else {
                                self.st = St::Ignore;
                            }
                        }
                        _ => {
                            if self.name_len < 4 {
                                self.name[self.name_len] = b;
                                self.name_len += 1;
                            } else {
                                self.name_other = true;
                            }
                        }
                    }
                }
                St::AfterColon => {
                    if data[i] == b' ' {
                        i += 1;
                    }
                    self.st = St::Data;
                }
                St::Data | St::Ignore => {
                    let rest = &data[i..];
                    let n = memchr2(b'\r', b'\n', rest);
                    let end = n.unwrap_or(rest.len());
                    if self.st == St::Data && end > 0 {
                        h.data(&rest[..end], n.is_some());
                    }
                    i += end;
                    if let Some(n) = n {
                        self.line_end(rest[n]);
                        i += 1;
                    }
                }
            }
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Events {
        cur: Vec<u8>,
        out: Vec<String>,
    }
    impl SseHandler for Events {
        fn data_start(&mut self, first: bool) {
            if first {
                self.cur.clear();
            } else {
                self.cur.push(b'\n');
            }
        }
        fn data(&mut self, bytes: &[u8], _line_end: bool) {
            self.cur.extend_from_slice(bytes);
        }
        fn dispatch(&mut self) {
            self.out.push(String::from_utf8(self.cur.clone()).unwrap());
        }
    }

    fn events(stream: &[u8], step: usize) -> Vec<String> {
        let mut f = SseFramer::default();
        let mut h = Events::default();
        for c in stream.chunks(step) {
            f.feed(c, &mut h);
        }
        h.out
    }

    #[test]
    fn whatwg_rules_under_every_split() {
        let s = b": comment\r\ndata:a\r\n\r\nevent: x\ndata: b\ndata:  c\n\rdata\r\rdat: no\ndatum: no\ndata:\ndata:\n\n\nid: 1\n\ndata: last";
        let want = vec!["a", "b\n c", "", "\n"];
        for step in 1..s.len() {
            assert_eq!(events(s, step), want, "step {step}");
        }
    }
}
