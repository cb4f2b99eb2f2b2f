//! Streaming content decoding: gzip / x-gzip, deflate (zlib-wrapped or raw),
//! br, zstd, identity, and comma-separated lists of them.
//!
//! Every input byte is decompressed once; output is produced in blocks of
//! [`BLOCK`] bytes and handed on at once, so memory is the codecs' own state
//! (inflate: 32 KiB window; brotli: its window, at most 16 MiB; zstd: window
//! capped at 8 MiB as RFC 9659 asks of HTTP) plus one block per stage,
//! whatever the body size. Output past `cap` bytes is not produced: decoding
//! stops cleanly and `stopped` is set (a compression bomb). Corrupt input
//! stops decoding and sets `failed`; what was decoded before stays decoded.
//! Bytes after the end of a compressed stream are ignored (gzip: unless
//! another gzip member starts there).

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

/// Default cap on decoded bytes per response (a compression bomb stops here).
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 64 << 20;

pub const BLOCK: usize = 32 * 1024;
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 23;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// Parse a Content-Encoding value into the codecs to undo, in decoding
/// order (the reverse of the order they were applied); `None` if one is unknown.
pub fn parse(header: &str) -> Option<Vec<Codec>> {
    let mut v = Vec::new();
    for part in header.split(',') {
        match part.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => {}
            "gzip" | "x-gzip" => v.push(Codec::Gzip),
            "deflate" => v.push(Codec::Deflate),
            "br" => v.push(Codec::Brotli),
            "zstd" => v.push(Codec::Zstd),
            _ => return None,
        }
    }
    v.reverse();
    Some(v)
}

/// How a stage's push ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Flow {
    /// All input used (or ignored); ready for more.
    More,
    /// Downstream asked to stop.
    Stop,
    /// Corrupt data.
    Error,
}

/// `emit` returns false to stop.
type Emit<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

/// Raw or zlib inflate. Returns (input consumed, flow, stream ended).
fn inflate(
    z: &mut Decompress,
    mut input: &[u8],
    out: &mut [u8],
    emit: Emit,
) -> (usize, Flow, bool) {
    let start = input.len();
    loop {
        let (i0, o0) = (z.total_in(), z.total_out());
        let st = z.decompress(input, out, FlushDecompress::None);
        let used = (z.total_in() - i0) as usize;
        let made = (z.total_out() - o0) as usize;
        input = &input[used..];
        if made > 0 && !emit(&out[..made]) {
            return (start - input.len(), Flow::Stop, false);
        }
        match st {
            Err(_) => return (start - input.len(), Flow::Error, false),
            Ok(Status::StreamEnd) => return (start - input.len(), Flow::More, true),
            Ok(_) if used == 0 && made == 0 => return (start - input.len(), Flow::More, false),
            Ok(_) => {}
        }
    }
}

/// Take up to `want - buf.len()` bytes of `input` into `buf`; true when full.
fn gather(buf: &mut Vec<u8>, want: usize, input: &mut &[u8]) -> bool {
    let n = (want - buf.len()).min(input.len());
    buf.extend_from_slice(&input[..n]);
    *input = &input[n..];
    buf.len() == want
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Gz {
    Header,
    ExtraLen,
    Extra(usize),
    Name,
    Comment,
    HeaderCrc,
    Body,
    Trailer,
    /// After a member: another may start, else the rest is ignored.
    Between,
    Done,
}

/// gzip (RFC 1952): header, raw deflate, CRC32 and size trailer; members may follow.
struct Gzip {
    phase: Gz,
    buf: Vec<u8>,
    flags: u8,
    z: Decompress,
    crc: crc32fast::Hasher,
    size: u32,
}

impl Gzip {
    fn new() -> Self {
        Gzip {
            phase: Gz::Header,
            buf: Vec::new(),
            flags: 0,
            z: Decompress::new(false),
            crc: crc32fast::Hasher::new(),
            size: 0,
        }
    }

    /// The next header part after `done`, given the flags.
    fn after(&self, done: Gz) -> Gz {
        let order = [
            (Gz::ExtraLen, 4u8),
            (Gz::Name, 8),
            (Gz::Comment, 16),
            (Gz::HeaderCrc, 2),
        ];
        let pos = order
            .iter()
            .position(|(p, _)| *p == done)
            .map_or(0, |i| i + 1);
        order[pos..]
            .iter()
            .find(|(_, bit)| self.flags & bit != 0)
            .map_or(Gz::Body, |(p, _)| *p)
    }

    fn push(&mut self, mut input: &[u8], out: &mut [u8], emit: Emit) -> Flow {
        while !input.is_empty() {
            match self.phase {
                Gz::Done => return Flow::More,
                Gz::Between => {
                    self.phase = if input[0] == 0x1f {
                        Gz::Header
                    } else {
                        Gz::Done
                    };
                }
                Gz::Header => {
                    if !gather(&mut self.buf, 10, &mut input) {
                        continue;
                    }
                    let h = &self.buf;
                    if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || h[3] & 0xe0 != 0 {
                        return Flow::Error;
                    }
                    self.flags = h[3];
                    self.buf.clear();
                    self.phase = self.after(Gz::Header);
                }
                Gz::ExtraLen => {
                    if gather(&mut self.buf, 2, &mut input) {
                        self.phase =
                            Gz::Extra(u16::from_le_bytes([self.buf[0], self.buf[1]]) as usize);
                        self.buf.clear();
                    }
                }
                Gz::Extra(left) => {
                    let n = left.min(input.len());
                    input = &input[n..];
                    self.phase = if n == left {
                        self.after(Gz::ExtraLen)
                    } else {
                        Gz::Extra(left - n)
                    };
                }
                Gz::Name | Gz::Comment => match memchr::memchr(0, input) {
                    Some(i) => {
                        input = &input[i + 1..];
                        self.phase = self.after(self.phase);
                    }
                    None => input = &[],
                },
                Gz::HeaderCrc => {
                    if gather(&mut self.buf, 2, &mut input) {
                        self.buf.clear();
                        self.phase = Gz::Body;
                    }
                }
                Gz::Body => {
                    let (crc, size) = (&mut self.crc, &mut self.size);
                    let mut counted = |b: &[u8]| {
                        crc.update(b);
                        *size = size.wrapping_add(b.len() as u32);
                        emit(b)
                    };
                    let (used, flow, ended) = inflate(&mut self.z, input, out, &mut counted);
                    input = &input[used..];
                    if flow != Flow::More {
                        return flow;
                    }
                    if !ended {
                        return Flow::More;
                    }
                    self.phase = Gz::Trailer;
                }
                Gz::Trailer => {
                    if !gather(&mut self.buf, 8, &mut input) {
                        continue;
                    }
                    let b = &self.buf;
                    let crc = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let size = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                    let seen =
                        std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
                    if seen != crc || size != self.size {
                        return Flow::Error;
                    }
                    *self = Gzip {
                        phase: Gz::Between,
                        ..Gzip::new()
                    };
                }
            }
        }
        Flow::More
    }
}

/// deflate: zlib-wrapped (RFC 1950) when the first two bytes form a valid
/// zlib header, else raw (RFC 1951), as browsers accept both.
struct Deflate {
    head: Vec<u8>,
    z: Option<Decompress>,
    done: bool,
}

impl Deflate {
    fn push(&mut self, mut input: &[u8], out: &mut [u8], emit: Emit) -> Flow {
        if self.done {
            return Flow::More;
        }
        if self.z.is_none() {
            let held = std::mem::take(&mut self.head);
            let mut head = held;
            if !gather(&mut head, 2, &mut input) {
                self.head = head;
                return Flow::More;
            }
            let zlib = head[0] & 0x0f == 8
                && head[0] >> 4 <= 7
                && u16::from_be_bytes([head[0], head[1]]) % 31 == 0;
            let mut z = Decompress::new(zlib);
            let (_, flow, ended) = inflate(&mut z, &head, out, emit);
            self.z = Some(z);
            self.done = ended;
            if flow != Flow::More || ended {
                return flow;
            }
        }
        let (_, flow, ended) = inflate(self.z.as_mut().unwrap(), input, out, emit);
        self.done = ended;
        flow
    }
}

struct Brotli {
    state: Box<BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>>,
    done: bool,
}

impl Brotli {
    fn push(&mut self, input: &[u8], out: &mut [u8], emit: Emit) -> Flow {
        let (mut avail_in, mut in_off) = (input.len(), 0);
        while !self.done {
            let (mut avail_out, mut out_off, mut total) = (out.len(), 0, 0);
            let r = BrotliDecompressStream(
                &mut avail_in,
                &mut in_off,
                input,
                &mut avail_out,
                &mut out_off,
                out,
                &mut total,
                &mut self.state,
            );
            if out_off > 0 && !emit(&out[..out_off]) {
                return Flow::Stop;
            }
            match r {
                BrotliResult::ResultSuccess => self.done = true,
                BrotliResult::NeedsMoreInput => return Flow::More,
                BrotliResult::NeedsMoreOutput => {}
                BrotliResult::ResultFailure => return Flow::Error,
            }
        }
        Flow::More
    }
}

struct Zstd {
    d: ZstdDecoder<'static>,
}

impl Zstd {
    fn push(&mut self, input: &[u8], out: &mut [u8], emit: Emit) -> Flow {
        let mut inb = InBuffer::around(input);
        loop {
            let mut outb = OutBuffer::around(&mut out[..]);
            let r = self.d.run(&mut inb, &mut outb);
            let made = outb.pos();
            if made > 0 && !emit(&out[..made]) {
                return Flow::Stop;
            }
            if r.is_err() {
                return Flow::Error;
            }
            if inb.pos() == input.len() && made < out.len() {
                return Flow::More;
            }
        }
    }
}

enum Stage {
    Gzip(Box<Gzip>),
    Deflate(Deflate),
    Brotli(Brotli),
    Zstd(Zstd),
}

impl Stage {
    fn new(c: Codec) -> Self {
        match c {
            Codec::Gzip => Stage::Gzip(Box::new(Gzip::new())),
            Codec::Deflate => Stage::Deflate(Deflate {
                head: Vec::new(),
                z: None,
                done: false,
            }),
            Codec::Brotli => Stage::Brotli(Brotli {
                state: Box::new(BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                )),
                done: false,
            }),
            Codec::Zstd => {
                let mut d = ZstdDecoder::new().expect("zstd decoder");
                let _ = d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX));
                Stage::Zstd(Zstd { d })
            }
        }
    }

    fn push(&mut self, input: &[u8], out: &mut [u8], emit: Emit) -> Flow {
        match self {
            Stage::Gzip(s) => s.push(input, out, emit),
            Stage::Deflate(s) => s.push(input, out, emit),
            Stage::Brotli(s) => s.push(input, out, emit),
            Stage::Zstd(s) => s.push(input, out, emit),
        }
    }
}

/// Push `input` through `stages` (each with its output block) into `sink`.
fn run(stages: &mut [(Stage, Vec<u8>)], input: &[u8], sink: Emit) -> Flow {
    let Some(((stage, out), rest)) = stages.split_first_mut() else {
        return if sink(input) { Flow::More } else { Flow::Stop };
    };
    let mut downstream = Flow::More;
    let flow = stage.push(input, out, &mut |block| {
        downstream = run(rest, block, sink);
        downstream == Flow::More
    });
    if downstream != Flow::More {
        downstream
    } else {
        flow
    }
}

/// A chain of decoders with a cap on decoded bytes.
pub struct Decoder {
    stages: Vec<(Stage, Vec<u8>)>,
    cap: u64,
    pub produced: u64,
    /// Output beyond the cap existed and was not produced.
    pub stopped: bool,
    /// Corrupt compressed data.
    pub failed: bool,
}

impl Decoder {
    pub fn new(codecs: &[Codec], cap: u64) -> Self {
        let stages = codecs
            .iter()
            .map(|&c| (Stage::new(c), vec![0u8; BLOCK]))
            .collect();
        Decoder {
            stages,
            cap,
            produced: 0,
            stopped: false,
            failed: false,
        }
    }

    pub fn push(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) {
        if self.stopped || self.failed {
            return;
        }
        let (cap, produced) = (self.cap, &mut self.produced);
        let mut capped = |b: &[u8]| {
            let room = cap - *produced;
            let take = room.min(b.len() as u64) as usize;
            if take > 0 {
                out(&b[..take]);
                *produced += take as u64;
            }
            b.len() as u64 <= room
        };
        match run(&mut self.stages, input, &mut capped) {
            Flow::More => {}
            Flow::Stop => self.stopped = true,
            Flow::Error => self.failed = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decode(codecs: &str, body: &[u8], step: usize, cap: u64) -> (Vec<u8>, bool, bool) {
        let mut d = Decoder::new(&parse(codecs).unwrap(), cap);
        let mut v = Vec::new();
        for c in body.chunks(step.max(1)) {
            d.push(c, &mut |b| v.extend_from_slice(b));
        }
        (v, d.stopped, d.failed)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_members_any_split_and_cap() {
        let text: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("{i} ").into_bytes())
            .collect();
        let mut two = gzip(&text[..50_000]);
        two.extend(gzip(&text[50_000..]));
        for step in [1, 7, 1000, 1 << 20] {
            assert_eq!(
                decode("gzip", &two, step, u64::MAX),
                (text.clone(), false, false)
            );
        }
        let (v, stopped, failed) = decode("x-gzip", &two, 4096, 1000);
        assert_eq!((v.len(), stopped, failed), (1000, true, false));
        let mut bad = two.clone();
        let n = bad.len();
        bad[n - 5] ^= 0xff; // size field of the second trailer
        assert!(
            decode("gzip", &bad, 100, u64::MAX).2,
            "a corrupt trailer fails"
        );
    }

    #[test]
    fn deflate_zlib_and_raw() {
        let text = b"hello hello hello hello deflate".repeat(100);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        let zlib = z.finish().unwrap();
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        r.write_all(&text).unwrap();
        let raw = r.finish().unwrap();
        for step in [1, 2, 3, 100] {
            assert_eq!(decode("deflate", &zlib, step, u64::MAX).0, text);
            assert_eq!(decode("deflate", &raw, step, u64::MAX).0, text);
        }
    }

    #[test]
    fn unknown_coding_and_lists() {
        assert_eq!(parse("gzip, br"), Some(vec![Codec::Brotli, Codec::Gzip]));
        assert_eq!(parse(" identity "), Some(vec![]));
        assert_eq!(parse("compress"), None);
    }
}
