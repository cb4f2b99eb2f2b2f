//! The response scanner: content decoding, framing, then a format's usage paths.

use crate::base64::Base64;
use crate::decode::{self, Decoder};
use crate::descriptor::{Descriptor, Framing as Kind, CONTENT_TYPES, SNIFF_MAX};
use crate::eventstream::EventStream;
use crate::field::{self, Field};
use crate::json::{parse_uint, DocEnd, JsonScanner, Sink};
use crate::ndjson::{self, LineHandler};
use crate::providers;
use crate::request::RequestInfo;
use crate::sse::{SseFramer, SseHandler};
use crate::template::{Tape, LINE_MAX};
use crate::text::TextState;
use crate::usage::{Source, Usage, UsageAcc};

/// Longest whole SSE event kept for `replay_event`.
const EVENT_MAX: usize = 2 * LINE_MAX;

pub use crate::decode::DEFAULT_MAX_DECODED_BYTES;
pub use crate::eventstream::DEFAULT_MAX_EVENT_BYTES;

/// What the response headers and the configuration say.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub content_type: String,
    pub content_encoding: String,
    pub path: String,
    /// Response headers that may carry usage (the descriptor's `usage_headers`;
    /// any other header is ignored). Names in any case.
    pub headers: Vec<(String, String)>,
    pub max_decoded_bytes: u64,
    pub max_event_bytes: usize,
}

impl Default for ResponseMeta {
    fn default() -> Self {
        ResponseMeta {
            content_type: String::new(),
            content_encoding: String::new(),
            path: String::new(),
            headers: Vec::new(),
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// Counters about what the scanner saw (for metrics and debugging).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Body bytes fed (before decoding).
    pub bytes: u64,
    /// Bytes after content decoding.
    pub decoded_bytes: u64,
    /// JSON documents completed (SSE events with data, NDJSON lines,
    /// event-stream payloads, the whole body).
    pub docs: u64,
    /// Documents cut short, or with a syntax error on a path of interest.
    pub broken_docs: u64,
    /// Error objects seen (`{"error": ...}`, event-stream exceptions).
    pub errors: u64,
    /// Event-stream bytes skipped to resync and messages failing their CRC.
    pub corrupt_frames: u64,
    /// Event-stream messages over `max_event_bytes`, skipped unread.
    pub oversized_events: u64,
    /// Decoding stopped at `max_decoded_bytes`.
    pub decode_capped: bool,
    /// The compressed data was corrupt.
    pub decode_failed: bool,
    /// The content encoding is not one we decode; the body was not read.
    pub undecodable: bool,
}

/// Usage and text: the sink for every leaf except base64 `bytes`.
struct Leaves<'a> {
    acc: &'a mut UsageAcc,
    text: &'a mut TextState,
}

impl Sink for Leaves<'_> {
    fn int(&mut self, f: Field, v: u64) {
        match f {
            field::CHOICE_INDEX | field::TOOL_INDEX => self.text.index(f, v),
            _ => self.acc.int(f, v),
        }
    }
    fn str_start(&mut self, f: Field) {
        if field::is_text(f) {
            self.text.start(f, self.acc.provider_model.as_deref());
        } else {
            self.acc.str_start(f);
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        if field::is_text(f) {
            self.text.piece(s);
            self.acc.saw_text();
        } else {
            self.acc.str_piece(f, s);
        }
    }
    fn str_end(&mut self, f: Field) {
        if field::is_text(f) {
            self.text.end();
        } else {
            self.acc.str_end(f);
        }
    }
    fn boolean(&mut self, f: Field, v: bool) {
        self.acc.boolean(f, v);
    }
    fn enter(&mut self, mark: Field) {
        if matches!(mark, field::ROOT | field::CHOICE) {
            // a finish reason held from a document or choice that broke off
            self.acc.commit_finish(self.text.choice());
        }
        self.acc.enter(mark);
        self.text.enter(mark);
    }
    fn exit(&mut self, mark: Field) {
        // a choice's (or document's) finish reason, now that its index is known
        if matches!(mark, field::ROOT | field::CHOICE) {
            self.acc.commit_finish(self.text.choice());
        }
    }
}

/// The sink for every document: usage and text, plus base64-wrapped inner documents.
struct Collector {
    acc: UsageAcc,
    text: TextState,
    nested: Option<(Base64, JsonScanner)>,
}

impl Collector {
    fn leaves(&mut self) -> Leaves<'_> {
        Leaves {
            acc: &mut self.acc,
            text: &mut self.text,
        }
    }
}

impl Sink for Collector {
    fn int(&mut self, f: Field, v: u64) {
        self.leaves().int(f, v);
    }
    fn str_start(&mut self, f: Field) {
        match (&mut self.nested, f) {
            (Some((b64, json)), field::BYTES) => {
                b64.reset();
                json.reset();
            }
            _ => self.leaves().str_start(f),
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        match (&mut self.nested, f) {
            (Some((b64, json)), field::BYTES) => {
                let mut leaves = Leaves {
                    acc: &mut self.acc,
                    text: &mut self.text,
                };
                b64.push(s, &mut |d| json.feed(d, &mut leaves));
            }
            _ => self.leaves().str_piece(f, s),
        }
    }
    fn str_end(&mut self, f: Field) {
        match (&mut self.nested, f) {
            (Some((b64, json)), field::BYTES) => {
                let mut leaves = Leaves {
                    acc: &mut self.acc,
                    text: &mut self.text,
                };
                b64.finish(&mut |d| json.feed(d, &mut leaves));
                json.end_doc(&mut leaves);
            }
            _ => self.leaves().str_end(f),
        }
    }
    fn boolean(&mut self, f: Field, v: bool) {
        self.leaves().boolean(f, v);
    }
    fn enter(&mut self, mark: Field) {
        self.leaves().enter(mark);
    }
    fn exit(&mut self, mark: Field) {
        self.leaves().exit(mark);
    }
}

/// One JSON document at a time, fed by whichever framing is in use.
struct Docs {
    json: JsonScanner,
    col: Collector,
    docs: u64,
    broken: u64,
    /// SSE: the first data line of the event, whole, held until the event ends (or the chunk does):
    /// then replayed from the tape or scanned and recorded (`template`)
    line: Vec<u8>,
    held: bool,
    /// no byte of the current data line has come yet, and it is the event's first
    line_first: bool,
    tape: Tape,
    /// the recording of the last line scanned, until it replaces `tape`
    spare: Tape,
    /// where the held line lay in the chunk, and whether the event just dispatched left the tape
    /// holding its line (replayed or recorded, a complete document)
    held_at: usize,
    taped: bool,
    /// the last whole event whose data line is the tape's, and where that line starts in it: a next
    /// event of the same bytes but one string's content is replayed without framing (`replay_event`)
    event: Vec<u8>,
    event_line: usize,
}

impl Docs {
    fn feed(&mut self, b: &[u8]) {
        self.release();
        self.json.feed(b, &mut self.col);
    }
    fn end(&mut self) {
        self.release();
        let end = self.json.end_doc(&mut self.col);
        self.count(end);
    }
    fn count(&mut self, end: DocEnd) {
        match end {
            DocEnd::Complete => self.docs += 1,
            DocEnd::Broken => self.broken += 1,
            DocEnd::Empty => {}
        }
    }
    /// The held line goes to the scanner (the event goes on past it, or the chunk ended first).
    fn release(&mut self) {
        if self.held {
            self.held = false;
            self.json.feed(&self.line, &mut self.col);
        }
    }
    /// The event ends with its one data line held: replayed if it fits the tape, else scanned and
    /// recorded.
    fn end_held(&mut self) {
        self.held = false;
        if let Some(end) = self.tape.replay(&mut self.line, &mut self.col) {
            self.event.clear(); // the tape's line is this one now: the event kept for the old one goes
            self.taped = true;
            self.count(end);
            return;
        }
        let mut rec = self.spare.record(&self.line, &mut self.col);
        self.json.feed(&self.line, &mut rec);
        let end = self.json.end_doc(&mut rec);
        self.spare.finish(&mut self.line, end);
        self.count(end);
        // a line whose strings have escapes makes a poor template (the next line's text will not have
        // the same ones): a usable tape stays for the lines after it
        self.taped = end == DocEnd::Complete && (self.spare.plain() || !self.tape.complete());
        if self.taped {
            std::mem::swap(&mut self.tape, &mut self.spare);
            self.event.clear();
        }
    }

    /// Replay the event at the start of `data` (the framer between events) from the last whole event,
    /// if it is that event with one string's content changed; returns its length.
    fn replay_event(&mut self, data: &[u8]) -> Option<usize> {
        if self.event.is_empty() {
            return None;
        }
        let n = self
            .tape
            .replay_event(&self.event, self.event_line, data, &mut self.col)?;
        self.docs += 1;
        Some(n)
    }

    /// `event` (a whole event, from between events to its dispatch, in one chunk) was just fed; keep
    /// it if its one data line is now the tape's.
    fn keep_event(&mut self, event: &[u8]) {
        if !std::mem::take(&mut self.taped) || event.len() > EVENT_MAX {
            return;
        }
        let at = self.held_at.wrapping_sub(event.as_ptr() as usize);
        let line = self.tape.line();
        if at
            .checked_add(line.len())
            .and_then(|end| event.get(at..end))
            == Some(line)
        {
            self.event.extend_from_slice(event);
            self.event_line = at;
        }
    }
}

impl SseHandler for Docs {
    fn data_start(&mut self, first: bool) {
        if first {
            self.json.reset();
        } else {
            self.feed(b"\n");
        }
        // templates for SSE documents of the response's own shape (not base64-wrapped inner ones)
        self.line_first = first && self.col.nested.is_none();
    }
    fn data(&mut self, bytes: &[u8], line_end: bool) {
        if std::mem::take(&mut self.line_first) && line_end && bytes.len() <= LINE_MAX {
            self.line.clear();
            self.line.extend_from_slice(bytes);
            self.held = true;
            self.held_at = bytes.as_ptr() as usize;
            return;
        }
        self.feed(bytes);
    }
    fn dispatch(&mut self) {
        if self.held {
            self.end_held();
        } else {
            self.end();
        }
    }
}

impl LineHandler for Docs {
    fn feed(&mut self, bytes: &[u8]) {
        Docs::feed(self, bytes);
    }
    fn end(&mut self) {
        Docs::end(self);
    }
}

enum Framing {
    /// Waiting for the first byte that is not whitespace (after a BOM).
    Undecided(Option<Kind>),
    Sse(SseFramer),
    Json {
        array: bool,
    },
    Ndjson,
    EventStream(EventStream),
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The decoded body: framing detection and documents.
struct Body {
    format: &'static Descriptor,
    framing: Framing,
    held: Vec<u8>,
    max_event: usize,
    docs: Docs,
}

impl Body {
    fn feed(&mut self, data: &[u8]) {
        if let Framing::Undecided(hint) = self.framing {
            self.held.extend_from_slice(data);
            if self.held.len() < BOM.len() && BOM.starts_with(&self.held) {
                return;
            }
            let start = if self.held.starts_with(BOM) {
                BOM.len()
            } else {
                0
            };
            let first = self.held[start..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .copied();
            if first.is_none() && self.held.len() <= SNIFF_MAX {
                return;
            }
            self.decide(hint, first);
            let held = std::mem::take(&mut self.held);
            self.frame(&held[start..]);
        } else {
            self.frame(data);
        }
    }

    fn decide(&mut self, hint: Option<Kind>, first: Option<u8>) {
        let kind = match hint {
            // a JSON or NDJSON content type over an event stream (a proxy that relabels it): no JSON
            // document starts with an SSE field's first byte (`data:`, `event:`, `id:`, `retry:`, `:`)
            Some(Kind::Json | Kind::JsonArray | Kind::Ndjson)
                if SSE_STARTS.contains(&first.unwrap_or(b'{')) =>
            {
                Kind::Sse
            }
            Some(k) => k,
            None => match first {
                Some(b'{') => self.format.brace_framing,
                Some(b'[') => Kind::Json,
                Some(0) => self.format.nul_framing.unwrap_or(Kind::Sse),
                _ => Kind::Sse,
            },
        };
        self.framing = match kind {
            Kind::Sse => Framing::Sse(SseFramer::default()),
            Kind::Ndjson => Framing::Ndjson,
            Kind::EventStream => Framing::EventStream(EventStream::new(self.max_event)),
            Kind::Json | Kind::JsonArray => {
                let array = first == Some(b'[');
                if array {
                    self.docs.json = JsonScanner::new(self.format.response_array);
                }
                Framing::Json { array }
            }
        };
    }

    fn frame(&mut self, data: &[u8]) {
        let docs = &mut self.docs;
        match &mut self.framing {
            Framing::Undecided(_) => {}
            Framing::Sse(f) => {
                let mut i = 0;
                while i < data.len() {
                    let clean = f.clean();
                    if clean {
                        if let Some(n) = docs.replay_event(&data[i..]) {
                            i += n;
                            continue;
                        }
                    }
                    docs.taped = false;
                    let n = f.feed_event(&data[i..], docs);
                    if clean && f.clean() {
                        docs.keep_event(&data[i..i + n]);
                    }
                    i += n;
                }
                docs.release(); // an event not ended in this chunk: its numbers now, as without templates
            }
            Framing::Json { .. } => docs.feed(data),
            Framing::Ndjson => ndjson::feed(data, docs),
            Framing::EventStream(es) => es.feed(data, &mut |m| {
                if m.message_type == b"exception" {
                    docs.col.acc.errors += 1;
                    return;
                }
                docs.json.reset();
                docs.feed(m.payload);
                docs.end();
            }),
        }
    }

    /// End of body: close what is open.
    fn finish(&mut self) {
        match &self.framing {
            Framing::Json { .. } | Framing::Ndjson => self.docs.end(),
            Framing::Sse(f) if f.pending() => self.docs.end(),
            Framing::EventStream(es) if es.pending() => self.docs.broken += 1,
            _ => {}
        }
    }

    fn kind(&self) -> Option<Kind> {
        Some(match self.framing {
            Framing::Undecided(_) => return None,
            Framing::Sse(_) => Kind::Sse,
            Framing::Json { array: false } => Kind::Json,
            Framing::Json { array: true } => Kind::JsonArray,
            Framing::Ndjson => Kind::Ndjson,
            Framing::EventStream(_) => Kind::EventStream,
        })
    }

    fn is_stream(&self) -> bool {
        !matches!(
            self.framing,
            Framing::Json { array: false } | Framing::Undecided(_)
        )
    }
}

/// The first bytes of SSE lines (`data:`, `event:`, `id:`, `retry:`, a `:` comment), none a JSON value's.
const SSE_STARTS: &[u8] = b"deir:";

pub struct ResponseScanner {
    request: Option<RequestInfo>,
    /// None: identity. Some(None): an encoding we cannot decode.
    decoder: Option<Option<Decoder>>,
    body: Body,
    bytes: u64,
    result: Option<Usage>,
}

impl ResponseScanner {
    pub fn new(provider: &str, request: Option<RequestInfo>, meta: &ResponseMeta) -> Self {
        let format = providers::resolve(provider, &meta.path, &meta.content_type);
        let ct = meta.content_type.to_ascii_lowercase();
        let hint = CONTENT_TYPES
            .iter()
            .find(|(c, _)| c.holds("", &ct))
            .map(|(_, k)| *k);
        let decoder = match decode::parse(&meta.content_encoding) {
            None => Some(None),
            Some(c) if c.is_empty() => None,
            Some(c) => Some(Some(Decoder::new(&c, meta.max_decoded_bytes))),
        };
        let mut body = Body {
            format,
            framing: Framing::Undecided(hint),
            held: Vec::new(),
            max_event: meta.max_event_bytes,
            docs: Docs {
                json: JsonScanner::new(format.response),
                col: Collector {
                    acc: UsageAcc::default(),
                    text: TextState::new(request.as_ref().and_then(|r| r.model.clone())),
                    nested: format
                        .inner
                        .map(|p| (Base64::default(), JsonScanner::new(p))),
                },
                docs: 0,
                broken: 0,
                line: Vec::new(),
                held: false,
                line_first: false,
                tape: Tape::default(),
                spare: Tape::default(),
                held_at: 0,
                taped: false,
                event: Vec::new(),
                event_line: 0,
            },
        };
        if hint == Some(Kind::EventStream) {
            body.decide(hint, None); // binary: no BOM or whitespace sniffing
        }
        for (name, value) in &meta.headers {
            let slot = format
                .usage_headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(name.trim()));
            if let (Some((_, f)), Some(v)) = (slot, parse_uint(value.trim().as_bytes())) {
                body.docs.col.acc.header(*f, v);
            }
        }
        ResponseScanner {
            request,
            decoder,
            body,
            bytes: 0,
            result: None,
        }
    }

    /// The provider whose format is read (`auto` and unknown ids resolved).
    pub fn provider(&self) -> &'static Descriptor {
        self.body.format
    }

    /// The framing the content type or the first bytes decided; None until then.
    pub fn framing(&self) -> Option<Kind> {
        self.body.kind()
    }

    /// Feed the next chunk of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.result.is_some() || chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len() as u64;
        match &mut self.decoder {
            None => self.body.feed(chunk),
            Some(Some(d)) => {
                let body = &mut self.body;
                d.push(chunk, &mut |b| body.feed(b));
            }
            Some(None) => {}
        }
    }

    pub fn stats(&self) -> Stats {
        let (mut s, d) = (Stats::default(), &self.body.docs);
        s.bytes = self.bytes;
        s.decoded_bytes = match &self.decoder {
            None => self.bytes,
            Some(Some(dec)) => dec.produced,
            Some(None) => 0,
        };
        s.docs = d.docs;
        s.broken_docs = d.broken;
        s.errors = d.col.acc.errors;
        if let Framing::EventStream(es) = &self.body.framing {
            s.corrupt_frames = es.counters.corrupt;
            s.oversized_events = es.counters.oversized;
        }
        if let Some(dec) = &self.decoder {
            s.decode_capped = dec.as_ref().is_some_and(|d| d.stopped);
            s.decode_failed = dec.as_ref().is_some_and(|d| d.failed);
            s.undecodable = dec.is_none();
        }
        s
    }

    /// End of the response: the usage (idempotent; later feeds are ignored).
    pub fn finish(&mut self) -> Usage {
        if let Some(u) = &self.result {
            return u.clone();
        }
        self.body.finish();
        let col = &mut self.body.docs.col;
        col.acc.commit_finish(col.text.choice()); // of a last document cut short
        if matches!(self.body.framing, Framing::Json { array: false }) && self.body.docs.docs > 0 {
            self.body.docs.col.acc.mark_final(); // a whole body, not a stream: nothing is provisional
        }
        let u = self.usage(true);
        self.result = Some(u.clone());
        u
    }

    /// A number that grows whenever the reported usage (or the provider's
    /// model) changes: cheap to poll after each chunk.
    pub fn usage_changes(&self) -> u64 {
        self.body.docs.col.acc.changes
    }

    /// A number that grows whenever output text arrives (tokenizer counts may
    /// have changed): with `usage_changes`, what a host polls after each chunk.
    pub fn text_changes(&self) -> u64 {
        self.body.docs.col.text.changes
    }

    /// The usage as of now, without ending anything (for mid-stream metadata).
    /// Settles the counted texts first, so a snapshot after every chunk costs
    /// in proportion to the chunk; when the provider's usage is final the text
    /// counts are not needed, and are not made.
    pub fn snapshot(&mut self) -> Usage {
        self.usage(false)
    }

    /// The usage as of now; `exact`: the texts counted exactly (a finish),
    /// else as a snapshot counts them (see `tokens::LONG_HELD`).
    fn usage(&mut self, exact: bool) -> Usage {
        let acc = &self.body.docs.col.acc;
        if self.result.is_none() && !(acc.reported() && acc.is_final()) {
            self.body.docs.col.text.settle();
        }
        self.current(exact)
    }

    fn current(&mut self, exact: bool) -> Usage {
        if let Some(u) = &self.result {
            return u.clone();
        }
        let acc = &self.body.docs.col.acc;
        let provider_model = acc.provider_model.clone();
        let mut u = Usage {
            model: self
                .request
                .as_ref()
                .and_then(|r| r.model.clone())
                .or_else(|| provider_model.clone()),
            provider_model,
            response_id: acc.response_id.clone(),
            finish_reasons: acc.finish_reasons(),
            streaming: self
                .request
                .as_ref()
                .map_or_else(|| self.body.is_stream(), |r| r.streaming),
            ..Usage::default()
        };
        let col = &mut self.body.docs.col;
        let (acc, text) = (&col.acc, &mut col.text);
        if acc.reported() {
            let n = acc.numbers(self.body.format.arithmetic);
            u.prompt_tokens = n.prompt;
            u.completion_tokens = n.completion;
            u.total_tokens = n.total;
            u.cached_tokens = n.cached;
            u.cache_write_tokens = n.cache_write;
            u.reasoning_tokens = n.reasoning;
            u.source = Source::Provider;
            // provisional usage never wins over the text delivered
            if !acc.is_final() && text.seen() {
                let (completion, reasoning) = text.totals(exact);
                u.reasoning_tokens = n.reasoning.max(reasoning);
                if completion > n.completion {
                    u.completion_tokens = completion;
                    u.total_tokens = n.prompt.saturating_add(completion);
                    u.source = Source::ProviderTokenizer;
                }
            }
        } else if text.seen() {
            let (completion, reasoning) = text.totals(exact);
            u.prompt_tokens = self.request.as_ref().map_or(0, |r| r.prompt_tokens);
            u.completion_tokens = completion;
            u.reasoning_tokens = reasoning;
            u.total_tokens = u.prompt_tokens.saturating_add(completion);
            u.source = Source::Tokenizer;
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Anthropic stream of `n` text deltas, with (`final_usage`) or without its message_delta.
    fn anthropic(n: usize, final_usage: bool) -> (Vec<u8>, String) {
        let mut body = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":9,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

"#
        .to_vec();
        let mut text = String::new();
        for i in 0..n {
            let w = [" The", " quick", " brown", " fox", ",", " 中文", " 😀"][i % 7];
            text.push_str(w);
            body.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
            body.extend_from_slice(w.as_bytes());
            body.extend_from_slice(b"\"}}\n\n");
        }
        if final_usage {
            body.extend_from_slice(br#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4321}}

event: message_stop
data: {"type":"message_stop"}

"#);
        }
        (body, text)
    }

    fn sse_scanner(provider: &str, model: &str) -> ResponseScanner {
        let meta = ResponseMeta {
            content_type: "text/event-stream".into(),
            ..ResponseMeta::default()
        };
        let req = RequestInfo {
            model: Some(model.into()),
            streaming: true,
            prompt_tokens: 0,
            ..RequestInfo::default()
        };
        ResponseScanner::new(provider, Some(req), &meta)
    }

    #[test]
    fn text_is_not_counted_when_the_providers_usage_is_final() {
        let (body, text) = anthropic(1500, true);
        assert!(text.len() > crate::tokens::MIN_BATCH && text.len() < crate::text::LAZY_BYTES);
        let mut sc = sse_scanner("anthropic", "gpt-4o");
        for c in body.chunks(16 << 10) {
            sc.feed(c);
        }
        let u = sc.finish();
        assert_eq!((u.completion_tokens, u.source), (4321, Source::Provider));
        // all of it held, none of it counted (a snapshot before the final usage would have counted it)
        assert_eq!(sc.body.docs.col.text.texts[0].1.state(), (text.len(), 0));
    }

    #[test]
    fn a_stream_cut_before_its_final_usage_counts_every_delivered_token() {
        let enc = crate::tokens::Encoding::O200k;
        for n in [10, 2000, 9000] {
            let (body, text) = anthropic(n, false);
            for step in [1, 333, 16 << 10] {
                let mut sc = sse_scanner("anthropic", "gpt-4o");
                for (i, c) in body.chunks(step).enumerate() {
                    sc.feed(c);
                    if i % 5 == 0 {
                        sc.snapshot();
                    }
                }
                let u = sc.finish();
                let want = enc.count(&text).max(1);
                assert_eq!(
                    (u.completion_tokens, u.prompt_tokens),
                    (want, 9),
                    "{n} deltas, step {step}"
                );
            }
        }
    }

    fn scan(provider: &str, content_type: &str, body: &[u8], step: usize) -> Usage {
        let meta = ResponseMeta {
            content_type: content_type.into(),
            ..ResponseMeta::default()
        };
        let mut sc = ResponseScanner::new(provider, None, &meta);
        for c in body.chunks(step) {
            sc.feed(c);
        }
        sc.finish()
    }

    #[test]
    fn finish_reasons_follow_the_choice_index_wherever_it_sits() {
        // n=3: choice 2 finishes first, its `index` after its reason; choice 0 by position
        let body = br#"data: {"id":"","choices":[{"index":1,"delta":{"content":"a"},"finish_reason":null}]}

data: {"id":"chatcmpl-9","choices":[{"finish_reason":"length","index":2}]}

data: {"id":"chatcmpl-other","choices":[{"finish_reason":"stop"},{"index":1,"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-9","choices":[{"finish_reason":"content_filter","delta":{}, "index":2}],"usage":{"prompt_tokens":3,"completion_tokens":1}}

data: {"choices":[{"index":0,"finish_reason":"length","#;
        for step in 1..body.len() {
            let u = scan("openai", "text/event-stream", body, step);
            assert_eq!(u.response_id.as_deref(), Some("chatcmpl-9"), "step {step}");
            // the last event is cut after its reason: the reason counts, as its other values would
            assert_eq!(
                u.finish_reasons,
                ["length", "tool_calls", "content_filter"],
                "step {step}"
            );
        }
    }

    /// Provider, content type, body, the response id and finish reasons it gives.
    type Case<'a> = (&'a str, &'a str, &'a [u8], Option<&'a str>, &'a [&'a str]);

    #[test]
    fn each_format_has_its_ids_and_reasons() {
        let cases: &[Case] = &[
            (
                "anthropic",
                "application/json",
                br#"{"id":"msg_1","type":"message","stop_reason":"max_tokens","usage":{"input_tokens":1}}"#,
                Some("msg_1"),
                &["max_tokens"],
            ),
            (
                "gemini",
                "application/json",
                br#"{"id":"v1_i","status":"completed","usage":{"total_tokens":3}}"#,
                Some("v1_i"),
                &[],
            ),
            (
                "openai",
                "application/json",
                br#"{"id":"resp_1","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}"#,
                Some("resp_1"),
                &["max_output_tokens"],
            ),
            (
                "cohere",
                "application/json",
                br#"{"response_id":"r","text":"hi","generation_id":"g-1","finish_reason":"COMPLETE"}"#,
                Some("g-1"),
                &["COMPLETE"],
            ),
            (
                "ollama",
                "application/x-ndjson",
                b"{\"model\":\"m\",\"id\":\"x\",\"done\":true,\"done_reason\":\"length\"}\n",
                None,
                &["length"],
            ),
            (
                "bedrock",
                "application/json",
                br#"{"output":{"message":{"content":[]}},"stopReason":"max_tokens","usage":{"inputTokens":1}}"#,
                None,
                &["max_tokens"],
            ),
        ];
        for &(provider, ct, body, id, reasons) in cases {
            for step in [1, 7, body.len()] {
                let u = scan(provider, ct, body, step);
                assert_eq!(u.response_id.as_deref(), id, "{provider}");
                assert_eq!(u.finish_reasons, reasons, "{provider}");
            }
        }
    }
}
