//! What the request tells: model, streaming, stream usage.

use crate::json::{Field, JsonScanner, Pat, Sink};
use crate::provider::{path_model, path_only, path_streams, Provider};
use crate::usage::{field, ShortString};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub streaming: bool,
    pub include_usage: bool,
    pub prompt_tokens: u64,
}

static REQUEST: Pat = Pat::Obj(
    None,
    &[
        ("model", Pat::Leaf(field::MODEL)),
        ("stream", Pat::Leaf(field::STREAM)),
        ("stream_options", Pat::Obj(None, &[("include_usage", Pat::Leaf(field::INCLUDE_USAGE))])),
    ],
);

#[derive(Default)]
struct Collect {
    model: Option<String>,
    stream: Option<bool>,
    include_usage: bool,
    buf: ShortString,
}

impl Sink for Collect {
    fn boolean(&mut self, f: Field, v: bool) {
        match f {
            field::STREAM => self.stream = Some(v),
            field::INCLUDE_USAGE => self.include_usage = v,
            _ => {}
        }
    }
    fn str_start(&mut self, f: Field) {
        if f == field::MODEL {
            self.buf.start();
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        if f == field::MODEL {
            self.buf.push(s);
        }
    }
    fn str_end(&mut self, f: Field) {
        if f == field::MODEL {
            if let Some(m) = self.buf.take() {
                self.model = Some(m);
            }
        }
    }
}

/// Parse a request body (any bytes; never fails). The model comes from the
/// body, else from the path (Gemini, Vertex, Bedrock, Azure deployments);
/// streaming from the body's `stream`, else from the path (Gemini
/// `:streamGenerateContent`, Bedrock `*-stream`), else Ollama's default
/// (its native API streams unless `"stream": false`).
pub fn parse_request(body: &[u8], provider: &str, path: &str) -> RequestInfo {
    let p = Provider::resolve(provider, path, "");
    let mut sc = JsonScanner::new(&REQUEST);
    let mut c = Collect::default();
    sc.feed(body, &mut c);
    sc.end_doc(&mut c);
    let ollama_native = p == Provider::Ollama && {
        let path = path_only(path);
        path.ends_with("/api/chat") || path.ends_with("/api/generate")
    };
    let streaming = c.stream.or_else(|| path_streams(p, path)).unwrap_or(ollama_native);
    RequestInfo {
        model: c.model.or_else(|| path_model(p, path)),
        streaming,
        include_usage: c.include_usage,
        prompt_tokens: 0,
    }
}
