//! What the request tells: model, streaming, stream usage, the output-token
//! limit it asks for, and a prompt token estimate.
//!
//! The limit (`max_output_tokens`): the last value of an `R_MAX_OUTPUT` key
//! (a `Raw` leaf, so every value is seen), else the last of an
//! `R_MAX_OUTPUT_ALT` key; a value that is not a JSON integer from 0 to
//! 2^32 written in plain digits (a negative, a float such as `100.0`, a
//! string, null, an object) reads as no limit, and being later it replaces
//! an earlier integer, as a JSON parser keeps the last duplicate key.
//!
//! Prompt rules (see docs/providers.md, "Prompt estimates"): OpenAI-style chat
//! messages follow the OpenAI cookbook (3 tokens per message, the tokens of
//! every string value, 1 more per `name`, 3 for the reply priming); every
//! other format counts the tokens of its text fields. An integer where text
//! is expected (embeddings token arrays) is one token.
//!
//! Besides text, what providers bill for:
//! - a tool definition (`R_TOOL`): the tokens of its name, description and
//!   compact JSON schema (`Pat::Raw`), plus [`TOOL_TOKENS`]; Anthropic's
//!   tools (`R_TOOL_ANTHROPIC`) add its tool-use system prompt once
//!   ([`ANTHROPIC_TOOL_PROMPT`]);
//! - a structured-output schema: the tokens of its compact JSON;
//! - media in a part (`R_PART_*`: the provider family's rules, see
//!   [`media_tokens`]): images by their size where the data tells it (PNG,
//!   GIF, WebP and JPEG headers read from the first bytes of base64 data),
//!   else a documented fallback; WAV audio by its duration; other audio,
//!   video and files by fixed estimates.

use crate::base64::Base64;
use crate::field::*;
use crate::json::{JsonScanner, Sink};
use crate::providers;
use crate::tokens::encoding_for;
use crate::usage::ShortString;
use std::borrow::Cow;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub streaming: bool,
    pub include_usage: bool,
    pub prompt_tokens: u64,
    /// The output-token limit the request sets, None without one.
    pub max_output_tokens: Option<u64>,
}

/// The largest output-token limit read (larger values read as none).
pub(crate) const MAX_OUTPUT_MAX: u64 = 1 << 32;

/// A limit from a value's compact JSON: plain digits, no leading zero, at
/// most [`MAX_OUTPUT_MAX`].
fn limit_of(raw: Option<String>) -> Option<u64> {
    raw.and_then(|s| crate::json::parse_uint(s.as_bytes()))
        .filter(|&v| v <= MAX_OUTPUT_MAX)
}

/// Added per tool definition (OpenAI's cookbook counts 7 per function plus
/// the rendering of its parameters; against recorded usage, 8 on top of the
/// compact JSON is within -12..+14 tokens per tool).
pub(crate) const TOOL_TOKENS: u64 = 8;
/// Anthropic's tool-use system prompt, added once when a request has tools
/// (Claude 4 models with `tool_choice` auto or none; `any`/`tool` is 313).
pub(crate) const ANTHROPIC_TOOL_PROMPT: u64 = 346;
/// Longest data URL header (`data:image/png;base64,`) looked for.
pub(crate) const DATA_URL_HEAD_MAX: usize = 256;
/// Decoded bytes of media data examined for a size (a JPEG frame header
/// after more metadata than this is not found).
pub(crate) const MEDIA_SNIFF_MAX: u64 = 1 << 20;
/// Seconds assumed for audio and video of unknown duration.
pub(crate) const MEDIA_SECONDS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Audio,
    Video,
    File,
}

/// The kind a `type` or MIME type names (ASCII case-insensitive).
fn kind_of(s: &[u8]) -> Option<Kind> {
    let s = s.to_ascii_lowercase();
    let has = |w: &[u8]| s.windows(w.len()).any(|x| x == w);
    if has(b"image") {
        Some(Kind::Image)
    } else if has(b"audio") {
        Some(Kind::Audio)
    } else if has(b"video") {
        Some(Kind::Video)
    } else if matches!(&s[..], b"file" | b"input_file" | b"document")
        || s.starts_with(b"application/")
        || s.starts_with(b"text/")
    {
        Some(Kind::File)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    OpenAi,
    Anthropic,
    Gemini,
}

/// What one media string told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Media {
    /// The kind its field names.
    implied: Option<Kind>,
    /// The kind its data URL's MIME type names.
    mime: Option<Kind>,
    /// Width and height from an image header.
    image: Option<(u32, u32)>,
    /// WAV `data` bytes and byte rate.
    audio: Option<(u32, u32)>,
}

struct Part {
    family: Family,
    kind: Option<Kind>,
    low: bool,
    items: Vec<Media>,
}

/// OpenAI, high detail: fit in 2048x2048, shortest side at most 768, then
/// 170 per 512px tile plus 85.
fn openai_image(w: u32, h: u32) -> u64 {
    let (mut w, mut h) = (w as u64, h as u64);
    let long = w.max(h);
    if long > 2048 {
        w = (w * 2048 / long).max(1);
        h = (h * 2048 / long).max(1);
    }
    let short = w.min(h);
    if short > 768 {
        w = (w * 768 / short).max(1);
        h = (h * 768 / short).max(1);
    }
    170 * w.div_ceil(512) * h.div_ceil(512) + 85
}

/// Anthropic: the long edge scaled to at most 1568, then width * height /
/// 750 (rounded up), at most 1600 (images past ~1.15 megapixels are scaled down).
fn anthropic_image(w: u32, h: u32) -> u64 {
    let (mut w, mut h) = (w as u64, h as u64);
    let long = w.max(h);
    if long > 1568 {
        w = (w * 1568 / long).max(1);
        h = (h * 1568 / long).max(1);
    }
    (w * h).div_ceil(750).min(1600)
}

/// Gemini 2.x: 258 when both sides are at most 384, else 258 per 768x768 tile.
fn gemini_image(w: u32, h: u32) -> u64 {
    if w <= 384 && h <= 384 {
        258
    } else {
        258 * (w as u64).div_ceil(768) * (h as u64).div_ceil(768)
    }
}

/// Tokens of one media item in a part of the given family.
fn media_tokens(family: Family, part_kind: Option<Kind>, low: bool, m: &Media) -> u64 {
    let kind = if m.image.is_some() {
        Kind::Image
    } else {
        m.implied
            .or(part_kind)
            .or(m.mime)
            .unwrap_or(if m.audio.is_some() {
                Kind::Audio
            } else {
                Kind::File
            })
    };
    let per_second = |rate: u64| match m.audio {
        Some((bytes, byte_rate)) if byte_rate > 0 => {
            (rate * bytes as u64).div_ceil(byte_rate as u64)
        }
        _ => rate * MEDIA_SECONDS,
    };
    let file = match family {
        Family::OpenAi => 765,
        Family::Anthropic => 1600,
        Family::Gemini => 258,
    };
    match (family, kind) {
        (Family::OpenAi, Kind::Image) if low => 85,
        (Family::OpenAi, Kind::Image) => m.image.map_or(765, |(w, h)| openai_image(w, h)),
        (Family::Anthropic, Kind::Image) => m.image.map_or(1600, |(w, h)| anthropic_image(w, h)),
        (Family::Gemini, Kind::Image) => m.image.map_or(258, |(w, h)| gemini_image(w, h)),
        (Family::OpenAi, Kind::Audio) => per_second(10),
        (Family::Gemini, Kind::Audio) => per_second(32),
        (Family::Gemini, Kind::Video) => 263 * MEDIA_SECONDS,
        _ => file,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// The first bytes: a JPEG after 2, a WAV after 12, else decided at 30.
    Head,
    JpegMarker,
    JpegCode,
    JpegLength,
    JpegFrame,
    WavChunk,
    WavFormat,
    Done,
}

/// Reads an image's size or a WAV's duration from the first decoded bytes,
/// in pieces of any size, holding at most 30 of them.
struct Header {
    step: Step,
    pos: u64,
    buf: [u8; 30],
    len: usize,
    need: usize,
    skip: u64,
    marker: u8,
    chunk: u32,
    byte_rate: u32,
    image: Option<(u32, u32)>,
    audio: Option<(u32, u32)>,
}

fn be16(b: &[u8]) -> u32 {
    u16::from_be_bytes([b[0], b[1]]) as u32
}
fn le16(b: &[u8]) -> u32 {
    u16::from_le_bytes([b[0], b[1]]) as u32
}
fn le24(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Width and height of a PNG, GIF or WebP from its first bytes.
fn fixed_header(h: &[u8]) -> Option<(u32, u32)> {
    let n = h.len();
    let dims = if n >= 24 && h[..8] == *b"\x89PNG\r\n\x1a\n" && h[12..16] == *b"IHDR" {
        (be32(&h[16..]), be32(&h[20..]))
    } else if n >= 10 && (h[..6] == *b"GIF87a" || h[..6] == *b"GIF89a") {
        (le16(&h[6..]), le16(&h[8..]))
    } else if n >= 16 && h[..4] == *b"RIFF" && h[8..12] == *b"WEBP" {
        match &h[12..16] {
            b"VP8 " if n >= 30 && h[23..26] == [0x9d, 0x01, 0x2a] => {
                (le16(&h[26..]) & 0x3fff, le16(&h[28..]) & 0x3fff)
            }
            b"VP8L" if n >= 25 && h[20] == 0x2f => {
                let bits = le32(&h[21..]);
                ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
            }
            b"VP8X" if n >= 30 => (le24(&h[24..]) + 1, le24(&h[27..]) + 1),
            _ => return None,
        }
    } else {
        return None;
    };
    (dims.0 > 0 && dims.1 > 0).then_some(dims)
}

impl Header {
    fn new() -> Self {
        Header {
            step: Step::Head,
            pos: 0,
            buf: [0; 30],
            len: 0,
            need: 2,
            skip: 0,
            marker: 0,
            chunk: 0,
            byte_rate: 0,
            image: None,
            audio: None,
        }
    }

    fn done(&self) -> bool {
        self.step == Step::Done
    }

    fn expect(&mut self, step: Step, need: usize) {
        self.step = step;
        self.need = need;
        self.len = 0;
    }

    fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.step != Step::Done {
            if self.pos >= MEDIA_SNIFF_MAX {
                self.step = Step::Done;
                break;
            }
            let room = (MEDIA_SNIFF_MAX - self.pos).min(data.len() as u64) as usize;
            if self.skip > 0 {
                let n = self.skip.min(room as u64);
                self.skip -= n;
                self.pos += n;
                data = &data[n as usize..];
                continue;
            }
            let n = (self.need - self.len).min(room);
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            self.pos += n as u64;
            data = &data[n..];
            if self.len == self.need {
                self.full();
            }
        }
    }

    /// `need` bytes are in `buf`.
    fn full(&mut self) {
        let b = self.buf;
        match self.step {
            Step::Head => match self.len {
                2 if b[..2] == [0xff, 0xd8] => self.expect(Step::JpegMarker, 1),
                2 => self.need = 12,
                12 if b[..4] == *b"RIFF" && b[8..12] == *b"WAVE" => self.expect(Step::WavChunk, 8),
                12 => self.need = 30,
                _ => {
                    self.image = fixed_header(&b);
                    self.step = Step::Done;
                }
            },
            Step::JpegMarker if b[0] == 0xff => self.expect(Step::JpegCode, 1),
            Step::JpegCode => match b[0] {
                0xff => self.len = 0,
                0xd0..=0xd8 | 0x01 => self.expect(Step::JpegMarker, 1),
                0xd9 | 0xda => self.step = Step::Done,
                m => {
                    self.marker = m;
                    self.expect(Step::JpegLength, 2);
                }
            },
            Step::JpegLength => {
                let len = be16(&b) as u64;
                let frame = matches!(self.marker, 0xc0..=0xcf)
                    && !matches!(self.marker, 0xc4 | 0xc8 | 0xcc);
                if len < 2 || (frame && len < 7) {
                    self.step = Step::Done;
                } else if frame {
                    self.expect(Step::JpegFrame, 5);
                } else {
                    self.skip = len - 2;
                    self.expect(Step::JpegMarker, 1);
                }
            }
            Step::JpegFrame => {
                let (h, w) = (be16(&b[1..]), be16(&b[3..]));
                self.image = (w > 0 && h > 0).then_some((w, h));
                self.step = Step::Done;
            }
            Step::WavChunk => {
                let size = le32(&b[4..]);
                match &b[..4] {
                    b"fmt " if size >= 12 => {
                        self.chunk = size;
                        self.expect(Step::WavFormat, 12);
                    }
                    b"data" => {
                        self.audio = (self.byte_rate > 0).then_some((size, self.byte_rate));
                        self.step = Step::Done;
                    }
                    b"fmt " => self.step = Step::Done,
                    _ => {
                        self.skip = size as u64 + (size & 1) as u64;
                        self.expect(Step::WavChunk, 8);
                    }
                }
            }
            Step::WavFormat => {
                self.byte_rate = le32(&b[8..]);
                self.skip = (self.chunk - 12) as u64 + (self.chunk & 1) as u64;
                self.expect(Step::WavChunk, 8);
            }
            Step::JpegMarker | Step::Done => self.step = Step::Done,
        }
    }

    /// The data ended.
    fn end(&mut self) {
        if self.step == Step::Head {
            self.image = fixed_header(&self.buf[..self.len]);
        }
        self.step = Step::Done;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Deciding between a data URL and raw base64.
    Prefix,
    Payload,
    Off,
}

/// A media string: a data URL (`data:<mime>;base64,...`), raw base64, or a
/// reference (URL, file id: base64 decoding stops at its first odd byte).
struct Sniff {
    implied: Option<Kind>,
    mime: Option<Kind>,
    mode: Mode,
    prefix: Vec<u8>,
    b64: Base64,
    header: Header,
}

impl Sniff {
    fn new(implied: Option<Kind>) -> Self {
        Sniff {
            implied,
            mime: None,
            mode: Mode::Prefix,
            prefix: Vec::new(),
            b64: Base64::default(),
            header: Header::new(),
        }
    }

    /// Decode in slices, to stop soon after the header is read.
    fn payload(&mut self, data: &[u8]) {
        for slice in data.chunks(4096) {
            if self.header.done() {
                return;
            }
            let header = &mut self.header;
            self.b64.push(slice, &mut |d| header.push(d));
        }
    }

    fn is_data_url(&self) -> bool {
        self.prefix.len() >= 5 && self.prefix[..5].eq_ignore_ascii_case(b"data:")
    }

    fn push(&mut self, mut s: &[u8]) {
        while self.mode == Mode::Prefix && !s.is_empty() {
            let take = (DATA_URL_HEAD_MAX - self.prefix.len()).min(s.len());
            self.prefix.extend_from_slice(&s[..take]);
            s = &s[take..];
            if self.prefix.len() < 5 {
                continue;
            }
            if !self.is_data_url() {
                self.mode = Mode::Payload;
                let head = std::mem::take(&mut self.prefix);
                self.payload(&head);
            } else if let Some(comma) = self.prefix.iter().position(|&b| b == b',') {
                let head = self.prefix[5..comma].to_ascii_lowercase();
                let mime_end = head.iter().position(|&b| b == b';').unwrap_or(head.len());
                self.mime = kind_of(&head[..mime_end]);
                if head.ends_with(b";base64") {
                    self.mode = Mode::Payload;
                    let rest = self.prefix[comma + 1..].to_vec();
                    self.payload(&rest);
                } else {
                    self.mode = Mode::Off;
                }
                self.prefix = Vec::new();
            } else if self.prefix.len() == DATA_URL_HEAD_MAX {
                self.mode = Mode::Off;
            }
        }
        if self.mode == Mode::Payload {
            self.payload(s);
        }
    }

    fn finish(mut self) -> Media {
        if self.mode == Mode::Prefix && !self.is_data_url() {
            self.mode = Mode::Payload;
            let head = std::mem::take(&mut self.prefix);
            self.payload(&head);
        }
        if self.mode == Mode::Payload && !self.header.done() {
            let header = &mut self.header;
            self.b64.finish(&mut |d| header.push(d));
        }
        self.header.end();
        Media {
            implied: self.implied,
            mime: self.mime,
            image: self.header.image,
            audio: self.header.audio,
        }
    }
}

#[derive(Default)]
struct Collect {
    model: Option<String>,
    stream: Option<bool>,
    include_usage: bool,
    /// The last `R_MAX_OUTPUT` and `R_MAX_OUTPUT_ALT` values read (None:
    /// none, or not an integer).
    max_output: Option<u64>,
    max_output_alt: Option<u64>,
    buf: ShortString,
    /// Text strings to count once the model (and so the encoding) is known.
    texts: Vec<String>,
    text: Vec<u8>,
    /// Tokens that need no encoding: token ids, per-message and per-name
    /// overheads, tool overheads, media.
    fixed: u64,
    messages: u64,
    tools: u64,
    anthropic_tools: bool,
    /// Open parts, innermost last (bounded by the pattern's depth).
    parts: Vec<Part>,
    media: Option<Sniff>,
    /// Inside a text string (its bytes in `text`).
    in_text: bool,
}

impl Collect {
    fn close_part(&mut self) {
        if let Some(p) = self.parts.pop() {
            for m in &p.items {
                self.fixed += media_tokens(p.family, p.kind, p.low, m);
            }
        }
    }

    fn end_media(&mut self) {
        if let Some(s) = self.media.take() {
            let m = s.finish();
            if let Some(p) = self.parts.last_mut() {
                p.items.push(m);
            }
        }
    }

    /// The document ended: a media string and parts left open count too.
    fn finish(&mut self) {
        // a body cut inside a string (Envoy passed only its first part): the text read counts
        if self.in_text {
            self.texts
                .push(String::from_utf8_lossy(&self.text).into_owned());
            self.in_text = false;
        }
        self.end_media();
        while !self.parts.is_empty() {
            self.close_part();
        }
        self.fixed += self.tools * TOOL_TOKENS;
        if self.anthropic_tools {
            self.fixed += ANTHROPIC_TOOL_PROMPT;
        }
    }
}

fn implied(f: Field) -> Option<Option<Kind>> {
    match f {
        R_IMAGE => Some(Some(Kind::Image)),
        R_AUDIO => Some(Some(Kind::Audio)),
        R_VIDEO => Some(Some(Kind::Video)),
        R_FILE => Some(Some(Kind::File)),
        R_MEDIA => Some(None),
        _ => None,
    }
}

impl Sink for Collect {
    fn int(&mut self, f: Field, _v: u64) {
        if f == R_TEXT {
            self.fixed += 1; // a token id
        }
    }
    fn boolean(&mut self, f: Field, v: bool) {
        match f {
            STREAM => self.stream = Some(v),
            INCLUDE_USAGE => self.include_usage = v,
            _ => {}
        }
    }
    fn str_start(&mut self, f: Field) {
        match f {
            MODEL | R_KIND | R_DETAIL | R_MAX_OUTPUT | R_MAX_OUTPUT_ALT => self.buf.start(),
            R_TEXT | R_NAME => {
                self.text.clear();
                self.in_text = true;
            }
            _ => {
                if let Some(k) = implied(f) {
                    self.media = Some(Sniff::new(k));
                }
            }
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        match f {
            MODEL | R_KIND | R_DETAIL | R_MAX_OUTPUT | R_MAX_OUTPUT_ALT => self.buf.push(s),
            R_TEXT | R_NAME => self.text.extend_from_slice(s),
            _ => {
                if let Some(m) = &mut self.media {
                    m.push(s);
                }
            }
        }
    }
    fn str_end(&mut self, f: Field) {
        match f {
            MODEL => {
                if let Some(m) = self.buf.take() {
                    self.model = Some(m);
                }
            }
            R_KIND => {
                let kind = self.buf.take().and_then(|s| kind_of(s.as_bytes()));
                if let (Some(k), Some(p)) = (kind, self.parts.last_mut()) {
                    p.kind = Some(k);
                }
            }
            R_DETAIL => {
                let low = self.buf.take().as_deref() == Some("low");
                if let Some(p) = self.parts.last_mut() {
                    p.low = low;
                }
            }
            R_MAX_OUTPUT => self.max_output = limit_of(self.buf.take()),
            R_MAX_OUTPUT_ALT => self.max_output_alt = limit_of(self.buf.take()),
            R_TEXT | R_NAME => {
                self.fixed += (f == R_NAME) as u64;
                self.texts
                    .push(String::from_utf8_lossy(&self.text).into_owned());
                self.text = Vec::new();
                self.in_text = false;
            }
            _ => self.end_media(),
        }
    }
    fn enter(&mut self, mark: Field) {
        let family = match mark {
            R_MSG => {
                self.messages += 1;
                return;
            }
            R_TOOL | R_TOOL_ANTHROPIC => {
                self.tools += 1;
                self.anthropic_tools |= mark == R_TOOL_ANTHROPIC;
                return;
            }
            R_PART_OPENAI => Family::OpenAi,
            R_PART_ANTHROPIC => Family::Anthropic,
            R_PART_GEMINI => Family::Gemini,
            _ => return,
        };
        self.parts.push(Part {
            family,
            kind: None,
            low: false,
            items: Vec::new(),
        });
    }
    fn exit(&mut self, mark: Field) {
        if matches!(mark, R_PART_OPENAI | R_PART_ANTHROPIC | R_PART_GEMINI) {
            self.close_part();
        }
    }
}

/// Parse a request body (any bytes; never fails). The model comes from the
/// body, else from the path (Gemini, Vertex, Bedrock, Azure deployments);
/// streaming from the body's `stream`, else from the path (Gemini
/// `:streamGenerateContent`, Bedrock `*-stream`, Ollama's native API, which
/// streams unless `"stream": false`); the output-token limit as the module
/// docs say.
pub fn parse_request(body: &[u8], provider: &str, path: &str) -> RequestInfo {
    let d = providers::resolve(provider, path, "");
    let mut sc = JsonScanner::new(d.request);
    let mut c = Collect::default();
    sc.feed(&json_utf8(body), &mut c);
    sc.end_doc(&mut c);
    c.finish();
    let streaming = c.stream.unwrap_or_else(|| d.path_streams(path));
    let model = c.model.or_else(|| d.path_model(path));
    let enc = encoding_for(model.as_deref());
    let text: u64 = c.texts.iter().map(|t| enc.count(t)).sum();
    let overhead = if c.messages > 0 {
        3 * c.messages + 3
    } else {
        0
    };
    RequestInfo {
        model,
        streaming,
        include_usage: c.include_usage,
        prompt_tokens: text + c.fixed + overhead,
        max_output_tokens: c.max_output.or(c.max_output_alt),
    }
}

/// The body as UTF-8, read as Python's `json.loads(bytes)` reads it (every
/// Python upstream: vLLM, LiteLLM, FastAPI servers), so that a client cannot
/// hide its prompt and model from llmtally by the encoding alone: a UTF-8 BOM
/// is dropped, and UTF-32 and UTF-16, told by a BOM or by where the zero bytes
/// are (`json.detect_encoding`), are decoded, a unit that is not a character
/// (or a cut one at the end) becoming U+FFFD.
fn json_utf8(b: &[u8]) -> Cow<'_, [u8]> {
    // (bytes per unit, big-endian, BOM length)
    let (unit, be, skip) = match b {
        [0, 0, 0xFE, 0xFF, ..] => (4, true, 4),
        [0xFF, 0xFE, 0, 0, ..] => (4, false, 4),
        [0xFE, 0xFF, ..] => (2, true, 2),
        [0xFF, 0xFE, ..] => (2, false, 2),
        [0xEF, 0xBB, 0xBF, ..] => return Cow::Borrowed(&b[3..]),
        [0, 0, _, _, ..] => (4, true, 0),
        [0, _, _, _, ..] => (2, true, 0),
        [_, 0, 0, 0, ..] => (4, false, 0),
        [_, 0, _, _, ..] => (2, false, 0),
        [0, _] => (2, true, 0),
        [_, 0] => (2, false, 0),
        _ => return Cow::Borrowed(b),
    };
    let b = &b[skip..];
    let word = |c: &[u8]| -> u32 {
        let v = c.iter().fold(0u32, |v, &x| v << 8 | x as u32);
        if be {
            v
        } else if unit == 2 {
            (v as u16).swap_bytes() as u32
        } else {
            v.swap_bytes()
        }
    };
    let units = b.chunks_exact(unit);
    let cut = !units.remainder().is_empty();
    let mut out = String::with_capacity(b.len());
    if unit == 2 {
        let mut n = units.len();
        // a high surrogate and then a cut unit at the end are one cut character to Python: one U+FFFD
        if cut && n > 0 && (0xD800..0xDC00).contains(&word(&b[2 * (n - 1)..2 * n])) {
            n -= 1;
        }
        out.extend(
            char::decode_utf16(units.take(n).map(|c| word(c) as u16))
                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)),
        );
    } else {
        out.extend(units.map(|c| char::from_u32(word(c)).unwrap_or(char::REPLACEMENT_CHARACTER)));
    }
    if cut {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    Cow::Owned(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_in_a_bom_utf16_or_utf32_read_as_utf8() {
        let plain = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"héllo 😀 world"}]}"#;
        let want = parse_request(plain.as_bytes(), "openai", "");
        assert_eq!(want.model.as_deref(), Some("gpt-4o"));
        assert!(want.prompt_tokens > 8);
        let utf16 = |be: bool| -> Vec<u8> {
            plain
                .encode_utf16()
                .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() })
                .collect()
        };
        let utf32 = |be: bool| -> Vec<u8> {
            plain
                .chars()
                .flat_map(|c| {
                    if be {
                        (c as u32).to_be_bytes()
                    } else {
                        (c as u32).to_le_bytes()
                    }
                })
                .collect()
        };
        let bodies = [
            [&[0xEF, 0xBB, 0xBF][..], plain.as_bytes()].concat(),
            utf16(false),
            utf16(true),
            [&[0xFF, 0xFE][..], &utf16(false)].concat(),
            [&[0xFE, 0xFF][..], &utf16(true)].concat(),
            utf32(false),
            utf32(true),
            [&[0xFF, 0xFE, 0, 0][..], &utf32(false)].concat(),
            [&[0, 0, 0xFE, 0xFF][..], &utf32(true)].concat(),
        ];
        for body in bodies {
            assert_eq!(parse_request(&body, "openai", ""), want, "{body:?}");
        }
        // a lone surrogate, a code point past U+10FFFF and cut units: U+FFFD each, as Python decodes them
        assert_eq!(
            &*json_utf8(&[b'"', 0, 0x00, 0xD8, b'"', 0, 7]),
            "\"\u{FFFD}\"\u{FFFD}".as_bytes()
        );
        assert_eq!(
            &*json_utf8(&[b'"', 0, 0, 0, 0, 0, 0x11, 0, 1, 0]),
            "\"\u{FFFD}\u{FFFD}".as_bytes()
        );
        // a high surrogate then a cut unit: one cut character, as Python's decoder sees it
        for body in [
            &[b'"', 0, 0x00, 0xD8, b'A'][..],
            &[0, b'"', 0xD8, 0x00, b'A'],
        ] {
            assert_eq!(&*json_utf8(body), "\"\u{FFFD}".as_bytes());
        }
    }

    /// The output limit of `body`, checked the same when fed in pieces of every size.
    fn max_out(provider: &str, path: &str, body: &str) -> Option<u64> {
        let whole = parse_request(body.as_bytes(), provider, path).max_output_tokens;
        let d = providers::resolve(provider, path, "");
        for step in 1..=body.len().clamp(1, 24) {
            let mut sc = JsonScanner::new(d.request);
            let mut c = Collect::default();
            for piece in body.as_bytes().chunks(step) {
                sc.feed(piece, &mut c);
            }
            sc.end_doc(&mut c);
            c.finish();
            assert_eq!(
                c.max_output.or(c.max_output_alt),
                whole,
                "{body} step {step}"
            );
        }
        whole
    }

    #[test]
    fn output_limits_per_provider() {
        let chat = "/v1/chat/completions";
        let cases: &[(&str, &str, &str, Option<u64>)] = &[
            // OpenAI Chat Completions: max_completion_tokens, else max_tokens
            ("openai", chat, r#"{"model":"gpt-4o","max_completion_tokens":512}"#, Some(512)),
            ("openai", chat, r#"{"model":"gpt-4o","max_tokens":300}"#, Some(300)),
            ("openai", chat, r#"{"max_tokens":300,"max_completion_tokens":700}"#, Some(700)),
            ("openai", chat, r#"{"max_completion_tokens":700,"max_tokens":300}"#, Some(700)),
            ("openai", chat, r#"{"max_completion_tokens":null,"max_tokens":300}"#, Some(300)),
            ("openai", chat, r#"{"model":"gpt-4o","messages":[]}"#, None),
            // Responses API, legacy completions
            ("openai", "/v1/responses", r#"{"model":"gpt-5","input":"hi","max_output_tokens":2048}"#, Some(2048)),
            ("openai", "/v1/completions", r#"{"prompt":"hi","max_tokens":16}"#, Some(16)),
            // OpenAI-compatible ids
            ("azure", "/openai/deployments/d/chat/completions", r#"{"max_completion_tokens":64}"#, Some(64)),
            ("mistral", chat, r#"{"model":"mistral-large-latest","max_tokens":100}"#, Some(100)),
            ("auto", chat, r#"{"max_tokens":8}"#, Some(8)),
            // Anthropic Messages, Bedrock InvokeModel (Anthropic body) and Converse
            ("anthropic", "/v1/messages", r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[]}"#, Some(1024)),
            ("anthropic", "/v1/messages", r#"{"model":"claude-sonnet-4-5","messages":[]}"#, None),
            ("bedrock", "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke", r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":4096}"#, Some(4096)),
            ("bedrock", "/model/m/converse", r#"{"messages":[],"inferenceConfig":{"maxTokens":2000,"temperature":0.5}}"#, Some(2000)),
            ("bedrock", "/model/m/converse-stream", r#"{"inferenceConfig":{"temperature":0.5}}"#, None),
            ("bedrock", "/model/meta.llama3-70b-instruct-v1%3A0/invoke", r#"{"prompt":"hi","max_gen_len":128}"#, Some(128)),
            ("bedrock", "/model/amazon.titan-text-express-v1/invoke", r#"{"inputText":"hi","textGenerationConfig":{"maxTokenCount":200}}"#, Some(200)),
            // Gemini and Vertex AI generateContent
            ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", r#"{"contents":[],"generationConfig":{"temperature":1,"maxOutputTokens":800}}"#, Some(800)),
            ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", r#"{"generation_config":{"max_output_tokens":900}}"#, Some(900)),
            ("vertex-ai", "/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent", r#"{"generationConfig":{"maxOutputTokens":8192}}"#, Some(8192)),
            ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", r#"{"maxOutputTokens":5,"generationConfig":{}}"#, None),
            // Cohere v2 chat
            ("cohere", "/v2/chat", r#"{"model":"command-a-03-2025","messages":[],"max_tokens":250}"#, Some(250)),
            // Ollama: options.num_predict (negative: unlimited), /v1's max_tokens
            ("ollama", "/api/chat", r#"{"model":"llama3.2","options":{"temperature":0,"num_predict":128}}"#, Some(128)),
            ("ollama", "/api/generate", r#"{"model":"llama3.2","options":{"num_predict":-1}}"#, None),
            ("ollama", "/api/generate", r#"{"model":"llama3.2","options":{"num_predict":-2}}"#, None),
            ("ollama", "/v1/chat/completions", r#"{"model":"llama3.2","max_tokens":77}"#, Some(77)),
            ("ollama", "/api/chat", r#"{"model":"llama3.2","num_predict":128}"#, None),
        ];
        for (provider, path, body, want) in cases {
            assert_eq!(max_out(provider, path, body), *want, "{provider} {body}");
        }
    }

    #[test]
    fn output_limits_that_are_not_plain_integers_read_as_none() {
        for v in [
            "-1",
            "-0",
            "1.5",
            "100.0",
            "1e3",
            "\"100\"",
            "null",
            "true",
            "[100]",
            "{\"n\":1}",
            "4294967297",
            "18446744073709551616",
            "99999999999999999999999999",
            "0100",
        ] {
            for (provider, body) in [
                ("openai", format!(r#"{{"max_completion_tokens":{v}}}"#)),
                ("openai", format!(r#"{{"max_tokens":{v}}}"#)),
                ("anthropic", format!(r#"{{"max_tokens":{v}}}"#)),
                (
                    "gemini",
                    format!(r#"{{"generationConfig":{{"maxOutputTokens":{v}}}}}"#),
                ),
                (
                    "bedrock",
                    format!(r#"{{"inferenceConfig":{{"maxTokens":{v}}}}}"#),
                ),
                ("cohere", format!(r#"{{"max_tokens":{v}}}"#)),
                ("ollama", format!(r#"{{"options":{{"num_predict":{v}}}}}"#)),
            ] {
                assert_eq!(max_out(provider, "", &body), None, "{provider} {body}");
            }
        }
        assert_eq!(max_out("openai", "", r#"{"max_tokens":0}"#), Some(0));
        assert_eq!(
            max_out("openai", "", r#"{"max_tokens":4294967296}"#),
            Some(1 << 32)
        );
        assert_eq!(max_out("openai", "", r#"{"max_tokens" : 12 }"#), Some(12));
    }

    #[test]
    fn the_last_output_limit_wins() {
        let cases: &[(&str, &str, Option<u64>)] = &[
            ("openai", r#"{"max_tokens":10,"max_tokens":20}"#, Some(20)),
            ("openai", r#"{"max_tokens":10,"max_tokens":-1}"#, None),
            // a later null clears the primary field: max_tokens applies, as for the provider
            (
                "openai",
                r#"{"max_completion_tokens":10,"max_completion_tokens":null,"max_tokens":99}"#,
                Some(99),
            ),
            (
                "openai",
                r#"{"max_output_tokens":10,"max_completion_tokens":30}"#,
                Some(30),
            ),
            ("anthropic", r#"{"max_tokens":10,"max_tokens":"x"}"#, None),
            (
                "gemini",
                r#"{"generationConfig":{"maxOutputTokens":10},"generation_config":{"max_output_tokens":40}}"#,
                Some(40),
            ),
            (
                "ollama",
                r#"{"options":{"num_predict":10,"num_predict":-1}}"#,
                None,
            ),
        ];
        for (provider, body, want) in cases {
            assert_eq!(max_out(provider, "", body), *want, "{provider} {body}");
        }
        // a body cut inside the value: a trailing number is read as it stands (like every
        // integer leaf), a cut string or object is not
        assert_eq!(max_out("anthropic", "", r#"{"max_tokens":10"#), Some(10));
        assert_eq!(
            max_out("anthropic", "", r#"{"max_tokens":10,"max_tokens":"1"#),
            Some(10)
        );
        assert_eq!(
            max_out("anthropic", "", r#"{"max_tokens":10,"max_tokens":[1"#),
            Some(10)
        );
    }

    #[test]
    fn the_seed_prompt_is_21_tokens() {
        let body = br#"{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Please explain the movie Dr. Strangelove in 1 sentence."}]}"#;
        let info = parse_request(body, "openai", "/v1/chat/completions");
        assert_eq!(info.prompt_tokens, 21);
        assert_eq!(info.model.as_deref(), Some("gpt-3.5-turbo"));
    }

    fn sniff(s: &[u8], step: usize) -> Media {
        let mut m = Sniff::new(None);
        for c in s.chunks(step.max(1)) {
            m.push(c);
        }
        m.finish()
    }

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = c.len();
            let v = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                out.push(if i <= n {
                    A[(v >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        out
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    /// A JPEG with `apps` 60,000-byte APP1 segments before its frame header.
    fn jpeg(w: u16, h: u16, apps: usize) -> Vec<u8> {
        let mut v = vec![0xff, 0xd8];
        for _ in 0..apps {
            v.extend_from_slice(&[0xff, 0xe1, 0xea, 0x62]);
            v.extend(std::iter::repeat(0x55).take(60_000));
        }
        v.extend_from_slice(&[0xff, 0xdb, 0, 3, 0, 0xff, 0xff, 0xc2, 0, 11, 8]);
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&[1, 1, 0x11, 0, 0xff, 0xd9]);
        v
    }

    fn wav(byte_rate: u32, data: u32) -> Vec<u8> {
        let mut v =
            b"RIFF\0\0\0\0WAVELIST\x03\0\0\0abc\0fmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0".to_vec();
        v.extend_from_slice(&byte_rate.to_le_bytes());
        v.extend_from_slice(b"\x02\0\x10\0data");
        v.extend_from_slice(&data.to_le_bytes());
        v
    }

    #[test]
    fn media_headers_under_every_split() {
        let webp_vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0\xff\x03\0\x7f\x02\0".to_vec();
        let gif = b"GIF89a\x40\x01\xf0\x00\0\0".to_vec();
        let cases: Vec<(String, Media)> = vec![
            (
                format!("data:image/png;base64,{}", b64(&png(1126, 488))),
                Media {
                    mime: Some(Kind::Image),
                    image: Some((1126, 488)),
                    ..Media::default()
                },
            ),
            (
                b64(&jpeg(4032, 3024, 2)),
                Media {
                    image: Some((4032, 3024)),
                    ..Media::default()
                },
            ),
            (
                b64(&webp_vp8x),
                Media {
                    image: Some((1024, 640)),
                    ..Media::default()
                },
            ),
            (
                format!("DATA:image/gif;name=a.gif;base64,{}", b64(&gif)),
                Media {
                    mime: Some(Kind::Image),
                    image: Some((320, 240)),
                    ..Media::default()
                },
            ),
            (
                format!("data:audio/wav;base64,{}", b64(&wav(32000, 320_000))),
                Media {
                    mime: Some(Kind::Audio),
                    audio: Some((320_000, 32000)),
                    ..Media::default()
                },
            ),
            ("https://example.com/cat.png".into(), Media::default()),
            (
                "data:application/pdf,%25PDF".into(),
                Media {
                    mime: Some(Kind::File),
                    ..Media::default()
                },
            ),
            // the frame header past the examined bytes
            (b64(&jpeg(10, 10, 18)), Media::default()),
        ];
        for (s, want) in &cases {
            for step in [1, 2, 3, 5, 7, 64, 4096, s.len()] {
                assert_eq!(
                    sniff(s.as_bytes(), step),
                    *want,
                    "{} step {step}",
                    &s[..20.min(s.len())]
                );
            }
        }
    }

    #[test]
    fn image_rules() {
        // OpenAI's documented examples, and recorded usage (1x1: 255; 1126x488: 595)
        assert_eq!(openai_image(1024, 1024), 765);
        assert_eq!(openai_image(2048, 4096), 1105);
        assert_eq!(openai_image(1, 1), 255);
        assert_eq!(openai_image(1126, 488), 595);
        assert_eq!(openai_image(100_000, 1), 85 + 170 * 4);
        // Anthropic's documented examples
        assert_eq!(anthropic_image(200, 200), 54);
        assert_eq!(anthropic_image(1000, 1000), 1334);
        assert_eq!(anthropic_image(1092, 1092), 1590);
        assert_eq!(anthropic_image(4000, 3000), 1600);
        assert_eq!(anthropic_image(3136, 100), 105);
        assert_eq!(gemini_image(384, 384), 258);
        assert_eq!(gemini_image(1024, 768), 516);
    }

    #[test]
    fn tools_schemas_and_images_count() {
        let body = br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d",
            "parameters": {"type": "object"}}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}}"#;
        let enc = encoding_for(Some("gpt-4o"));
        let text: u64 = [
            "user",
            "f",
            "d",
            r#"{"type":"object"}"#,
            "n",
            r#"{"type":"object"}"#,
        ]
        .iter()
        .map(|t| enc.count(t))
        .sum();
        let info = parse_request(body, "openai", "/v1/chat/completions");
        assert_eq!(info.prompt_tokens, text + 3 + 3 + 85 + 765 + TOOL_TOKENS);
    }
}
