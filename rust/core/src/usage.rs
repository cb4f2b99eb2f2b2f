//! Usage numbers: what formats report, and how they combine.

use crate::formats::Format;
use crate::json::{Field, Sink};

/// Leaf and mark ids shared by every format's pattern.
pub mod field {
    use crate::json::Field;
    /// Usage slots (index into [`super::UsageAcc::slots`]).
    pub const INPUT: Field = 0;
    pub const OUTPUT: Field = 1;
    pub const TOTAL: Field = 2;
    pub const CACHED: Field = 3;
    pub const CACHE_WRITE: Field = 4;
    pub const REASONING: Field = 5;
    /// Input billed besides the prompt (Gemini `toolUsePromptTokenCount`).
    pub const EXTRA_INPUT: Field = 6;
    pub const SLOTS: usize = 7;
    /// A model name (string leaf).
    pub const MODEL: Field = 16;
    /// Mark: an error object.
    pub const ERROR: Field = 17;
    /// Request leaves.
    pub const STREAM: Field = 18;
    pub const INCLUDE_USAGE: Field = 19;
    /// Mark: a usage object that replaces all earlier usage (Gemini's cumulative `usageMetadata`).
    pub const USAGE_RESET: Field = 20;
    /// A base64 string wrapping a nested document (Bedrock `chunk` payloads).
    pub const BYTES: Field = 21;
    /// Marks: a document's root, a choice (array element), a tool call.
    pub const ROOT: Field = 22;
    pub const CHOICE: Field = 23;
    pub const TOOL: Field = 24;
    /// Leaves naming the current choice / tool call (else their position).
    pub const CHOICE_INDEX: Field = 25;
    pub const TOOL_INDEX: Field = 26;
    /// Streamed output text, by kind (each kind of each choice and tool call
    /// is its own text).
    pub const T_CONTENT: Field = 30;
    pub const T_REFUSAL: Field = 31;
    pub const T_REASONING: Field = 32;
    pub const T_TOOL_NAME: Field = 33;
    pub const T_TOOL_ARGS: Field = 34;
    /// Request side: a chat message (mark), a counted string (an integer
    /// there is one token id), a `name` (counted, plus one token).
    pub const R_MSG: Field = 40;
    pub const R_TEXT: Field = 41;
    pub const R_NAME: Field = 42;

    pub fn is_text(f: Field) -> bool {
        (T_CONTENT..=T_TOOL_ARGS).contains(&f)
    }
}

/// Where the numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    #[default]
    None,
    Provider,
    Tokenizer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Provider => "provider",
            Source::Tokenizer => "tokenizer",
        }
    }
}

/// The result of scanning one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub model: Option<String>,
    pub provider_model: Option<String>,
    pub streaming: bool,
    pub source: Source,
}

/// Longest model name kept; longer ones are ignored.
pub const MODEL_MAX: usize = 256;

/// Collects a short string leaf (a model name) with a cap.
#[derive(Default)]
pub struct ShortString {
    buf: Vec<u8>,
    over: bool,
}

impl ShortString {
    pub fn start(&mut self) {
        self.buf.clear();
        self.over = false;
    }
    pub fn push(&mut self, s: &[u8]) {
        if self.buf.len() + s.len() > MODEL_MAX {
            self.over = true;
        } else {
            self.buf.extend_from_slice(s);
        }
    }
    /// The value, unless empty or too long.
    pub fn take(&mut self) -> Option<String> {
        self.valid()
            .then(|| String::from_utf8_lossy(&self.buf).into_owned())
    }

    fn valid(&self) -> bool {
        !self.over && !self.buf.is_empty()
    }
}

/// Latest value of each usage slot, and the provider's model.
#[derive(Default)]
pub struct UsageAcc {
    pub slots: [Option<u64>; field::SLOTS],
    pub provider_model: Option<String>,
    pub errors: u64,
    /// Grows whenever a reported number or the provider's model changes.
    pub changes: u64,
    model_buf: ShortString,
    /// The bytes `provider_model` was made from.
    model_bytes: Vec<u8>,
}

impl UsageAcc {
    pub fn reported(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }
    fn get(&self, f: Field) -> u64 {
        self.slots[f as usize].unwrap_or(0)
    }
    /// prompt, completion, total, cached, reasoning, by the format's rules.
    pub fn numbers(&self, f: &Format) -> [u64; 5] {
        let cached = self.get(field::CACHED);
        let reasoning = self.get(field::REASONING);
        let mut prompt = self
            .get(field::INPUT)
            .saturating_add(self.get(field::EXTRA_INPUT));
        if f.prompt_adds_cache {
            prompt = prompt
                .saturating_add(cached)
                .saturating_add(self.get(field::CACHE_WRITE));
        }
        let mut completion = self.get(field::OUTPUT);
        if f.completion_adds_reasoning {
            completion = completion.saturating_add(reasoning);
        }
        let total = self.slots[field::TOTAL as usize].unwrap_or(prompt.saturating_add(completion));
        [prompt, completion, total, cached, reasoning]
    }
}

impl Sink for UsageAcc {
    fn int(&mut self, f: Field, v: u64) {
        if (f as usize) < field::SLOTS && self.slots[f as usize] != Some(v) {
            self.slots[f as usize] = Some(v);
            self.changes += 1;
        }
    }
    fn str_start(&mut self, f: Field) {
        if f == field::MODEL {
            self.model_buf.start();
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        if f == field::MODEL {
            self.model_buf.push(s);
        }
    }
    fn str_end(&mut self, f: Field) {
        // streams repeat the model in every chunk: build the String only when it changes
        if f == field::MODEL && self.model_buf.valid() && self.model_bytes != self.model_buf.buf {
            self.model_bytes.clone_from(&self.model_buf.buf);
            self.provider_model = self.model_buf.take();
            self.changes += 1;
        }
    }
    fn enter(&mut self, mark: Field) {
        match mark {
            field::ERROR => self.errors += 1,
            field::USAGE_RESET => self.slots = [None; field::SLOTS],
            _ => {}
        }
    }
}
