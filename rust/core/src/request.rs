//! What the request tells: model, streaming, stream usage, and a prompt
//! token estimate.
//!
//! Prompt rules (see docs/providers.md, "Prompt estimates"): OpenAI-style chat
//! messages follow the OpenAI cookbook (3 tokens per message, the tokens of
//! every string value, 1 more per `name`, 3 for the reply priming); every
//! other format counts the tokens of its text fields. An integer where text
//! is expected (embeddings token arrays) is one token.

use crate::field::*;
use crate::json::{JsonScanner, Sink};
use crate::providers;
use crate::tokens::encoding_for;
use crate::usage::ShortString;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub streaming: bool,
    pub include_usage: bool,
    pub prompt_tokens: u64,
}

#[derive(Default)]
struct Collect {
    model: Option<String>,
    stream: Option<bool>,
    include_usage: bool,
    buf: ShortString,
    /// Text strings to count once the model (and so the encoding) is known.
    texts: Vec<String>,
    text: Vec<u8>,
    /// Tokens that need no encoding: token ids, per-message and per-name overheads.
    fixed: u64,
    messages: u64,
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
            MODEL => self.buf.start(),
            R_TEXT | R_NAME => self.text.clear(),
            _ => {}
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        match f {
            MODEL => self.buf.push(s),
            R_TEXT | R_NAME => self.text.extend_from_slice(s),
            _ => {}
        }
    }
    fn str_end(&mut self, f: Field) {
        match f {
            MODEL => {
                if let Some(m) = self.buf.take() {
                    self.model = Some(m);
                }
            }
            R_TEXT | R_NAME => {
                self.fixed += (f == R_NAME) as u64;
                self.texts
                    .push(String::from_utf8_lossy(&self.text).into_owned());
                self.text = Vec::new();
            }
            _ => {}
        }
    }
    fn enter(&mut self, mark: Field) {
        if mark == R_MSG {
            self.messages += 1;
        }
    }
}

/// Parse a request body (any bytes; never fails). The model comes from the
/// body, else from the path (Gemini, Vertex, Bedrock, Azure deployments);
/// streaming from the body's `stream`, else from the path (Gemini
/// `:streamGenerateContent`, Bedrock `*-stream`, Ollama's native API, which
/// streams unless `"stream": false`).
pub fn parse_request(body: &[u8], provider: &str, path: &str) -> RequestInfo {
    let d = providers::resolve(provider, path, "");
    let mut sc = JsonScanner::new(d.request);
    let mut c = Collect::default();
    sc.feed(body, &mut c);
    sc.end_doc(&mut c);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_prompt_is_21_tokens() {
        let body = br#"{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Please explain the movie Dr. Strangelove in 1 sentence."}]}"#;
        let info = parse_request(body, "openai", "/v1/chat/completions");
        assert_eq!(info.prompt_tokens, 21);
        assert_eq!(info.model.as_deref(), Some("gpt-3.5-turbo"));
    }
}
