//! What the request body tells: model, streaming, stream usage.

use crate::json::{Field, JsonScanner, Pat, Sink};
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
    info: RequestInfo,
    model: ShortString,
}

impl Sink for Collect {
    fn boolean(&mut self, f: Field, v: bool) {
        match f {
            field::STREAM => self.info.streaming = v,
            field::INCLUDE_USAGE => self.info.include_usage = v,
            _ => {}
        }
    }
    fn str_start(&mut self, f: Field) {
        if f == field::MODEL {
            self.model.start();
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        if f == field::MODEL {
            self.model.push(s);
        }
    }
    fn str_end(&mut self, f: Field) {
        if f == field::MODEL {
            if let Some(m) = self.model.take() {
                self.info.model = Some(m);
            }
        }
    }
}

/// Parse a request body (any bytes; never fails).
pub fn parse_request(body: &[u8], _provider: &str, _path: &str) -> RequestInfo {
    let mut sc = JsonScanner::new(&REQUEST);
    let mut c = Collect::default();
    sc.feed(body, &mut c);
    sc.end_doc(&mut c);
    c.info
}
