//! Newline-delimited JSON (Ollama): each line is one document. Lines are
//! streamed into the JSON scanner, never buffered.

use memchr::memchr;

/// Receives the lines: `feed` for bytes of the current line, `end` at `\n`.
pub trait LineHandler {
    fn feed(&mut self, bytes: &[u8]);
    fn end(&mut self);
}

pub fn feed<H: LineHandler>(mut data: &[u8], h: &mut H) {
    while !data.is_empty() {
        match memchr(b'\n', data) {
            Some(n) => {
                if n > 0 {
                    h.feed(&data[..n]);
                }
                h.end();
                data = &data[n + 1..];
            }
            None => {
                h.feed(data);
                return;
            }
        }
    }
}
