//! Usage numbers: what formats report, and how they combine.

use crate::field::{self, Field};
use crate::json::Sink;

/// How a provider's numbers combine into the common meaning (see README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arithmetic {
    /// The provider's input count excludes cache reads and writes: add them.
    pub prompt_adds_cache: bool,
    /// The provider's output count excludes reasoning tokens: add them.
    pub completion_adds_reasoning: bool,
}

impl Arithmetic {
    pub const AS_REPORTED: Arithmetic = Arithmetic {
        prompt_adds_cache: false,
        completion_adds_reasoning: false,
    };
    pub const PROMPT_ADDS_CACHE: Arithmetic = Arithmetic {
        prompt_adds_cache: true,
        completion_adds_reasoning: false,
    };
    pub const COMPLETION_ADDS_REASONING: Arithmetic = Arithmetic {
        prompt_adds_cache: false,
        completion_adds_reasoning: true,
    };
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
    pub fn numbers(&self, f: Arithmetic) -> [u64; 5] {
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
