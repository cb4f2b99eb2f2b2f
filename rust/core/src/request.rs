//! What the request tells: model, streaming, stream usage, and a prompt
//! token estimate.
//!
//! Prompt rules (see README, "Prompt estimates"): OpenAI-style chat
//! messages follow the OpenAI cookbook (3 tokens per message, the tokens of
//! every string value, 1 more per `name`, 3 for the reply priming); every
//! other format counts the tokens of its text fields. An integer where text
//! is expected (embeddings token arrays) is one token.

use crate::json::Pat::{self, Arr, Leaf, Obj, Or};
use crate::json::{Field, JsonScanner, Sink};
use crate::provider::{path_model, path_only, path_streams, Provider};
use crate::tokens::encoding_for;
use crate::usage::field::*;
use crate::usage::ShortString;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub streaming: bool,
    pub include_usage: bool,
    pub prompt_tokens: u64,
}

const STREAM_OPTIONS: Pat = Obj(None, &[("include_usage", Leaf(INCLUDE_USAGE))]);
/// `[{"text": ...}]` content blocks or parts (images and other kinds are not counted).
const TEXT_BLOCKS: Pat = Arr(&Obj(None, &[("text", Leaf(R_TEXT))]));
const TEXT_OR_BLOCKS: Pat = Or(&[Leaf(R_TEXT), TEXT_BLOCKS]);

/// OpenAI chat message (also Responses message items).
const CHAT_MESSAGE: Pat = Obj(
    Some(R_MSG),
    &[
        ("role", Leaf(R_TEXT)),
        ("content", TEXT_OR_BLOCKS),
        ("name", Leaf(R_NAME)),
        ("tool_call_id", Leaf(R_TEXT)),
        (
            "tool_calls",
            Arr(&Obj(
                None,
                &[(
                    "function",
                    Obj(None, &[("name", Leaf(R_TEXT)), ("arguments", Leaf(R_TEXT))]),
                )],
            )),
        ),
    ],
);
/// Responses `input`, completions `prompt`, embeddings `input`: a string, or
/// an array of strings, token ids, token-id arrays or message items.
const INPUT: Pat = Or(&[
    Leaf(R_TEXT),
    Arr(&Or(&[Leaf(R_TEXT), CHAT_MESSAGE, Arr(&Leaf(R_TEXT))])),
]);

static OPENAI: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("stream_options", STREAM_OPTIONS),
        ("messages", Arr(&CHAT_MESSAGE)),
        ("input", INPUT),
        ("prompt", INPUT),
        ("instructions", Leaf(R_TEXT)),
    ],
);

/// Anthropic Messages and Bedrock (Converse, and InvokeModel's Anthropic body).
const BLOCK: Pat = Obj(None, &[("text", Leaf(R_TEXT)), ("content", TEXT_OR_BLOCKS)]);
static MESSAGES: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("system", TEXT_OR_BLOCKS),
        (
            "messages",
            Arr(&Obj(None, &[("content", Or(&[Leaf(R_TEXT), Arr(&BLOCK)]))])),
        ),
    ],
);

const GEMINI_CONTENT: Pat = Obj(None, &[("parts", TEXT_BLOCKS)]);
static GEMINI: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("contents", Arr(&GEMINI_CONTENT)),
        ("systemInstruction", GEMINI_CONTENT),
        ("system_instruction", GEMINI_CONTENT),
    ],
);

static OLLAMA: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("stream_options", STREAM_OPTIONS),
        ("messages", Arr(&Obj(None, &[("content", Leaf(R_TEXT))]))),
        ("prompt", Leaf(R_TEXT)),
        ("system", Leaf(R_TEXT)),
    ],
);

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
/// `:streamGenerateContent`, Bedrock `*-stream`), else Ollama's default
/// (its native API streams unless `"stream": false`).
pub fn parse_request(body: &[u8], provider: &str, path: &str) -> RequestInfo {
    let p = Provider::resolve(provider, path, "");
    let pat: &'static Pat = match p {
        Provider::Anthropic | Provider::Bedrock => &MESSAGES,
        Provider::Gemini | Provider::VertexAI => &GEMINI,
        Provider::Ollama => &OLLAMA,
        Provider::OpenAI | Provider::Azure | Provider::Mistral => &OPENAI,
    };
    let mut sc = JsonScanner::new(pat);
    let mut c = Collect::default();
    sc.feed(body, &mut c);
    sc.end_doc(&mut c);
    let ollama_native = p == Provider::Ollama && {
        let path = path_only(path);
        path.ends_with("/api/chat") || path.ends_with("/api/generate")
    };
    let streaming = c
        .stream
        .or_else(|| path_streams(p, path))
        .unwrap_or(ollama_native);
    let model = c.model.or_else(|| path_model(p, path));
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
