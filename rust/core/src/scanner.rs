//! The response scanner: framing detection, then a format's usage paths.

use crate::formats::{anthropic, openai, Format};
use crate::json::{DocEnd, JsonScanner};
use crate::provider::Provider;
use crate::request::RequestInfo;
use crate::sse::{SseFramer, SseHandler};
use crate::usage::{Source, Usage, UsageAcc};

/// Response metadata known from the headers.
#[derive(Debug, Clone, Default)]
pub struct ResponseMeta {
    pub content_type: String,
    pub content_encoding: String,
    pub status: u16,
    pub path: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    /// Not known yet: waiting for the first byte that is not whitespace.
    Undecided,
    Sse,
    Json,
    /// A content encoding we cannot read: bytes are ignored.
    Opaque,
}

/// Bytes held while the framing is undecided (leading whitespace only).
const SNIFF_MAX: usize = 4096;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Counters about what the scanner saw (for metrics and debugging).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes: u64,
    /// JSON documents (SSE events with data, or the whole body) completed.
    pub docs: u64,
    /// Documents cut short or with a syntax error on a path of interest.
    pub broken_docs: u64,
    /// Error objects seen (`{"error": ...}`, Anthropic `error` events).
    pub errors: u64,
}

struct Docs<'a> {
    json: &'a mut JsonScanner,
    acc: &'a mut UsageAcc,
    stats: &'a mut Stats,
}

impl Docs<'_> {
    fn end(&mut self) {
        match self.json.end_doc(self.acc) {
            DocEnd::Complete => self.stats.docs += 1,
            DocEnd::Broken => self.stats.broken_docs += 1,
            DocEnd::Empty => {}
        }
    }
}

impl SseHandler for Docs<'_> {
    fn data_start(&mut self, first: bool) {
        if first {
            self.json.reset();
        } else {
            self.json.feed(b"\n", self.acc);
        }
    }
    fn data(&mut self, bytes: &[u8]) {
        self.json.feed(bytes, self.acc);
    }
    fn dispatch(&mut self) {
        self.end();
    }
}

pub struct ResponseScanner {
    format: &'static Format,
    request: Option<RequestInfo>,
    framing: Framing,
    /// Leading bytes held while undecided (BOM prefix and whitespace).
    held: Vec<u8>,
    bom_checked: bool,
    sse: SseFramer,
    json: JsonScanner,
    acc: UsageAcc,
    stats: Stats,
    result: Option<Usage>,
}

fn format_for(p: Provider) -> &'static Format {
    match p {
        Provider::Anthropic => &anthropic::FORMAT,
        _ => &openai::FORMAT,
    }
}

impl ResponseScanner {
    pub fn new(provider: &str, request: Option<RequestInfo>, meta: &ResponseMeta) -> Self {
        let format = format_for(Provider::resolve(provider, &meta.path));
        let ct = meta.content_type.to_ascii_lowercase();
        let enc = meta.content_encoding.trim().to_ascii_lowercase();
        let framing = if !(enc.is_empty() || enc == "identity") {
            Framing::Opaque
        } else if ct.contains("text/event-stream") {
            Framing::Sse
        } else if ct.contains("json") {
            Framing::Json
        } else {
            Framing::Undecided
        };
        ResponseScanner {
            format,
            request,
            framing,
            held: Vec::new(),
            bom_checked: false,
            sse: SseFramer::default(),
            json: JsonScanner::new(format.pat),
            acc: UsageAcc::default(),
            stats: Stats::default(),
            result: None,
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.errors = self.acc.errors;
        s
    }

    /// Feed the next chunk of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.result.is_some() || chunk.is_empty() {
            return;
        }
        self.stats.bytes += chunk.len() as u64;
        if self.framing == Framing::Opaque {
            return;
        }
        if !self.bom_checked || self.framing == Framing::Undecided {
            self.held.extend_from_slice(chunk);
            if !self.bom_checked {
                if self.held.len() < BOM.len() && BOM.starts_with(&self.held) {
                    return;
                }
                self.bom_checked = true;
                if self.held.starts_with(BOM) {
                    self.held.drain(..BOM.len());
                }
            }
            if self.framing == Framing::Undecided {
                match self.held.iter().find(|b| !b.is_ascii_whitespace()) {
                    Some(b'{') | Some(b'[') => self.framing = Framing::Json,
                    Some(_) => self.framing = Framing::Sse,
                    None if self.held.len() > SNIFF_MAX => self.framing = Framing::Sse,
                    None => return,
                }
            }
            let held = std::mem::take(&mut self.held);
            self.dispatch(&held);
            return;
        }
        self.dispatch(chunk);
    }

    fn dispatch(&mut self, data: &[u8]) {
        match self.framing {
            Framing::Sse => {
                let mut docs = Docs { json: &mut self.json, acc: &mut self.acc, stats: &mut self.stats };
                self.sse.feed(data, &mut docs);
            }
            Framing::Json => self.json.feed(data, &mut self.acc),
            Framing::Undecided | Framing::Opaque => {}
        }
    }

    /// End of the response: the usage (idempotent; later feeds are ignored).
    pub fn finish(&mut self) -> Usage {
        if let Some(u) = &self.result {
            return u.clone();
        }
        let streaming = match self.framing {
            Framing::Sse => true,
            Framing::Json => false,
            _ => self.request.as_ref().is_some_and(|r| r.streaming),
        };
        let cut_event = self.framing == Framing::Sse && self.sse.pending();
        if self.framing == Framing::Json || cut_event {
            Docs { json: &mut self.json, acc: &mut self.acc, stats: &mut self.stats }.end();
        }
        let req_model = self.request.as_ref().and_then(|r| r.model.clone());
        let provider_model = self.acc.provider_model.clone();
        let mut u = Usage {
            model: req_model.or_else(|| provider_model.clone()),
            provider_model,
            streaming,
            ..Usage::default()
        };
        if self.acc.reported() {
            let [p, c, t, ca, r] = self.acc.numbers(self.format.prompt_adds_cache);
            u.prompt_tokens = p;
            u.completion_tokens = c;
            u.total_tokens = t;
            u.cached_tokens = ca;
            u.reasoning_tokens = r;
            u.source = Source::Provider;
        }
        self.result = Some(u.clone());
        u
    }
}
