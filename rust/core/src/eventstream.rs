//! AWS event stream framing (`application/vnd.amazon.eventstream`, Bedrock).
//!
//! ```text
//! [total length u32 BE][headers length u32 BE][prelude CRC32 u32 BE]
//! [headers ...][payload ...][message CRC32 u32 BE]
//! ```
//! A message is held until complete (at most `max_message` bytes) so both
//! CRCs can be verified before its payload is read. A prelude whose CRC
//! fails is skipped one byte at a time until a valid prelude is found again
//! (sync is never lost for good); a message whose own CRC fails, or whose
//! headers are malformed, is skipped whole; a message longer than
//! `max_message` is skipped without being buffered.

pub(crate) const PRELUDE: usize = 12;
pub(crate) const MIN_MESSAGE: usize = 16;

/// A verified message, as handed to the handler.
/// Default cap on one buffered event-stream message (Bedrock).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

pub struct Message<'a> {
    pub event_type: &'a [u8],
    pub message_type: &'a [u8],
    pub payload: &'a [u8],
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub messages: u64,
    /// Bytes skipped while searching for a valid prelude, and messages
    /// dropped for a bad CRC or malformed headers.
    pub corrupt: u64,
    pub oversized: u64,
}

pub struct EventStream {
    buf: Vec<u8>,
    /// Bytes of an oversized message still to skip.
    skip: usize,
    max_message: usize,
    pub counters: Counters,
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// Walk the headers; None if malformed.
fn headers(mut h: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut event_type, mut message_type): (&[u8], &[u8]) = (b"", b"");
    while !h.is_empty() {
        let name_len = h[0] as usize;
        let name = h.get(1..1 + name_len)?;
        let kind = *h.get(1 + name_len)?;
        h = &h[2 + name_len..];
        let fixed = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let len = u16::from_be_bytes([*h.first()?, *h.get(1)?]) as usize;
                let value = h.get(2..2 + len)?;
                if kind == 7 {
                    match name {
                        b":event-type" => event_type = value,
                        b":message-type" => message_type = value,
                        _ => {}
                    }
                }
                h = &h[2 + len..];
                continue;
            }
            _ => return None,
        };
        h = h.get(fixed..)?;
    }
    Some((event_type, message_type))
}

impl EventStream {
    pub fn new(max_message: usize) -> Self {
        EventStream {
            buf: Vec::new(),
            skip: 0,
            max_message: max_message.max(MIN_MESSAGE),
            counters: Counters::default(),
        }
    }

    /// True when part of a message is held.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty() || self.skip > 0
    }

    pub fn feed(&mut self, mut data: &[u8], on_message: &mut dyn FnMut(Message<'_>)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            // Gather a prelude.
            if self.buf.len() < PRELUDE {
                let n = (PRELUDE - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.buf.len() < PRELUDE {
                    return;
                }
                let total = be32(&self.buf[0..4]);
                let hlen = be32(&self.buf[4..8]);
                let ok = crc32fast::hash(&self.buf[0..8]) as usize == be32(&self.buf[8..12])
                    && total >= MIN_MESSAGE
                    && hlen <= total - MIN_MESSAGE;
                if !ok {
                    // Resync: drop one byte and look again.
                    self.counters.corrupt += 1;
                    self.buf.remove(0);
                    continue;
                }
                if total > self.max_message {
                    self.counters.oversized += 1;
                    self.skip = total - PRELUDE;
                    self.buf.clear();
                    continue;
                }
            }
            let total = be32(&self.buf[0..4]);
            let n = (total - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() < total {
                return;
            }
            let msg = &self.buf[..total];
            let hlen = be32(&msg[4..8]);
            let crc_ok = crc32fast::hash(&msg[..total - 4]) as usize == be32(&msg[total - 4..]);
            match (crc_ok, headers(&msg[PRELUDE..PRELUDE + hlen])) {
                (true, Some((event_type, message_type))) => {
                    self.counters.messages += 1;
                    on_message(Message {
                        event_type,
                        message_type,
                        payload: &msg[PRELUDE + hlen..total - 4],
                    });
                }
                _ => self.counters.corrupt += 1,
            }
            self.buf.clear();
        }
    }
}

/// Encode one message (tests only; the mock upstream has its own in Python).
#[cfg(test)]
fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + h.len() + payload.len() + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stream: &[u8], step: usize, max: usize) -> (Vec<String>, Counters) {
        let mut es = EventStream::new(max);
        let mut got = Vec::new();
        for c in stream.chunks(step) {
            es.feed(c, &mut |m| {
                got.push(format!(
                    "{}/{}/{}",
                    String::from_utf8_lossy(m.event_type),
                    String::from_utf8_lossy(m.message_type),
                    String::from_utf8_lossy(m.payload)
                ))
            });
        }
        (got, es.counters)
    }

    #[test]
    fn messages_corruption_and_resync() {
        let a = encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            b"{\"a\":1}",
        );
        let b = encode(
            &[
                (":message-type", "exception"),
                (":event-type", "throttlingException"),
            ],
            b"{}",
        );
        let mut bad = a.clone();
        let last = bad.len() - 6;
        bad[last] ^= 1; // payload byte: message CRC fails
        let big = encode(&[(":event-type", "chunk")], &[b'x'; 300]);
        let mut stream = Vec::new();
        stream.extend_from_slice(b"junk!");
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&big);
        stream.extend_from_slice(&b);
        for step in [1, 2, 5, 13, 64, 4096] {
            let (got, c) = run(&stream, step, 256);
            assert_eq!(
                got,
                vec!["chunk/event/{\"a\":1}", "throttlingException/exception/{}"],
                "step {step}"
            );
            assert_eq!(
                c,
                Counters {
                    messages: 2,
                    corrupt: 6,
                    oversized: 1
                },
                "step {step}"
            );
        }
    }
}
