//! A streaming base64 decoder (standard alphabet), for Bedrock's
//! `{"bytes": "<base64>"}` chunk payloads. Quads are decoded as they
//! complete; a final group of 2 or 3 characters (padded or not) is decoded at
//! the end; any other character, or data after `=`, stops decoding.

#[derive(Default)]
pub struct Base64 {
    acc: u32,
    n: u8,
    pad: bool,
    failed: bool,
}

fn value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

impl Base64 {
    pub fn reset(&mut self) {
        *self = Base64::default();
    }

    #[cfg(test)]
    fn failed(&self) -> bool {
        self.failed
    }

    /// Decode `input`, passing decoded bytes to `out` in blocks.
    pub fn push(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) {
        let mut buf = [0u8; 768];
        let mut len = 0;
        for &c in input {
            if self.failed {
                break;
            }
            if c == b'=' {
                self.pad = true;
                continue;
            }
            match value(c) {
                Some(v) if !self.pad => {
                    self.acc = (self.acc << 6) | v;
                    self.n += 1;
                    if self.n == 4 {
                        buf[len..len + 3].copy_from_slice(&self.acc.to_be_bytes()[1..]);
                        len += 3;
                        self.acc = 0;
                        self.n = 0;
                        if len == buf.len() {
                            out(&buf[..len]);
                            len = 0;
                        }
                    }
                }
                _ => self.failed = true,
            }
        }
        if len > 0 {
            out(&buf[..len]);
        }
    }

    /// Decode the final partial group.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) {
        if !self.failed && self.n >= 2 {
            let bits = self.acc << (6 * (4 - self.n as u32));
            let bytes = bits.to_be_bytes();
            out(&bytes[1..self.n as usize]);
        }
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut d = Base64::default();
        let mut v = Vec::new();
        for c in s.chunks(step) {
            d.push(c, &mut |b| v.extend_from_slice(b));
        }
        let failed = d.failed();
        d.finish(&mut |b| v.extend_from_slice(b));
        (v, failed)
    }

    #[test]
    fn decodes_any_split() {
        for step in 1..8 {
            assert_eq!(
                decode(b"aGVsbG8gd29ybGQ=", step),
                (b"hello world".to_vec(), false)
            );
            assert_eq!(
                decode(b"aGVsbG8gd29ybA==", step),
                (b"hello worl".to_vec(), false)
            );
            assert_eq!(
                decode(b"aGVsbG8gd29ybA", step),
                (b"hello worl".to_vec(), false)
            );
            assert_eq!(decode(b"aGVs*bG8=", step), (b"hel".to_vec(), true));
            assert_eq!(decode(b"aGV=zbG8", step), (b"".to_vec(), true));
        }
    }
}
