//! Usage numbers: what formats report, and how they combine.

use crate::field::{self, Field};
use crate::json::Sink;

/// How a provider's numbers combine into the common meaning (see docs/providers.md, "Usage semantics").
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
    /// The provider's usage was provisional (the stream ended or was cut
    /// before its final usage) and the delivered text counted more.
    ProviderTokenizer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Provider => "provider",
            Source::Tokenizer => "tokenizer",
            Source::ProviderTokenizer => "provider+tokenizer",
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
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub model: Option<String>,
    pub provider_model: Option<String>,
    pub streaming: bool,
    pub source: Source,
    /// The provider's id of the response (`chatcmpl-...`, `resp_...`,
    /// `msg_...`, Gemini's `responseId`): the first valid one seen.
    pub response_id: Option<String>,
    /// The finish (stop) reason of each choice that reported one, in the
    /// order of the choice indexes.
    pub finish_reasons: Vec<String>,
}

/// Longest model name kept; longer ones are ignored.
pub const MODEL_MAX: usize = 256;
/// Longest response id kept; a longer one is ignored (never truncated).
pub const RESPONSE_ID_MAX: usize = 256;
/// Longest finish reason kept; a longer one is ignored.
pub const FINISH_REASON_MAX: usize = 64;
/// Most choices whose finish reason is kept; reasons of further choice
/// indexes are ignored (a known index still takes a later reason).
pub const FINISH_REASONS_MAX: usize = 16;

/// Whether a response id or finish reason may be kept: printable ASCII
/// only (no control character, nothing a log line or header could split on).
fn printable(b: &[u8]) -> bool {
    b.iter().all(|c| (0x20..0x7f).contains(c))
}

/// Collects a short string leaf (a model name, an id) with a cap of `MAX` bytes.
#[derive(Default)]
pub struct ShortString<const MAX: usize = MODEL_MAX> {
    buf: Vec<u8>,
    over: bool,
}

impl<const MAX: usize> ShortString<MAX> {
    pub fn start(&mut self) {
        self.buf.clear();
        self.over = false;
    }
    pub fn push(&mut self, s: &[u8]) {
        if self.buf.len() + s.len() > MAX {
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

/// A response's numbers in the common meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Numbers {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// Latest value of each usage slot, and the provider's model.
#[derive(Default)]
pub struct UsageAcc {
    pub slots: [Option<u64>; field::SLOTS],
    pub provider_model: Option<String>,
    pub errors: u64,
    /// Grows whenever a reported number or the provider's model changes.
    pub changes: u64,
    /// Documents begun (ROOT marks), the one of the first finish reason,
    /// and the one of the latest reported number.
    doc: u64,
    finish_doc: Option<u64>,
    usage_doc: u64,
    /// The document of the latest output text.
    text_doc: u64,
    /// Usage from response headers: the provider's totals, over any body value.
    headers: [Option<u64>; field::SLOTS],
    model_buf: ShortString,
    /// The bytes `provider_model` was made from.
    model_bytes: Vec<u8>,
    /// The first valid response id, and the one being read.
    pub response_id: Option<String>,
    id_buf: ShortString<RESPONSE_ID_MAX>,
    /// The finish reason being read, and the latest valid one of the current
    /// choice (or document), held until the choice's index is known: committed by
    /// [`UsageAcc::commit_finish`] when the choice or document ends, when the
    /// next one begins (a broken document), or at the end of the response.
    finish_buf: ShortString<FINISH_REASON_MAX>,
    finish_held: Vec<u8>,
    finish_pending: bool,
    /// (choice index, finish reason), sorted by index, at most `FINISH_REASONS_MAX`.
    finishes: Vec<(u64, String)>,
}

impl UsageAcc {
    pub fn reported(&self) -> bool {
        self.slots.iter().chain(&self.headers).any(Option::is_some)
    }
    fn slot(&self, f: Field) -> Option<u64> {
        self.headers[f as usize].or(self.slots[f as usize])
    }
    fn get(&self, f: Field) -> u64 {
        self.slot(f).unwrap_or(0)
    }
    fn has(&self, f: Field) -> bool {
        self.slot(f).is_some()
    }
    /// A slot, or the summed slot that replaces it where reported.
    fn get_or_sum(&self, f: Field, sum: Field) -> u64 {
        self.slot(sum).unwrap_or_else(|| self.get(f))
    }
    /// A usage number from a response header (wins over the body's).
    pub fn header(&mut self, f: Field, v: u64) {
        if let Some(h) = self.headers.get_mut(f as usize) {
            *h = Some(v);
            self.changes += 1;
        }
    }
    /// Output text arrived in the current document.
    pub fn saw_text(&mut self) {
        self.text_doc = self.doc;
    }
    /// Whether the reported usage is final: a finish reason came in the
    /// document of the latest number or before it. Streams report usage early
    /// and then update it (Anthropic's `message_start` placeholder, running
    /// totals of vLLM, Perplexity, Gemini, Bedrock's Llama); until a finish
    /// reason, those numbers are a floor.
    /// What is reported from here on is final (response headers, a whole body).
    pub fn mark_final(&mut self) {
        self.finish_doc = Some(self.finish_doc.map_or(self.doc, |f| f.min(self.doc)));
    }

    /// The held finish reason becomes the reason of choice `choice` (the
    /// index the choice's `index` key gave, else its position), replacing an
    /// earlier one of that index.
    #[inline]
    pub fn commit_finish(&mut self, choice: u64) {
        if !self.finish_pending {
            return;
        }
        self.finish_pending = false;
        let v = &self.finish_held;
        match self.finishes.binary_search_by_key(&choice, |e| e.0) {
            Ok(i) if self.finishes[i].1.as_bytes() == v.as_slice() => {}
            Ok(i) => {
                self.finishes[i].1 = String::from_utf8_lossy(v).into_owned();
                self.changes += 1;
            }
            Err(i) if self.finishes.len() < FINISH_REASONS_MAX => {
                let s = String::from_utf8_lossy(v).into_owned();
                self.finishes.insert(i, (choice, s));
                self.changes += 1;
            }
            Err(_) => {}
        }
    }

    /// The committed finish reasons, in the order of the choice indexes.
    pub fn finish_reasons(&self) -> Vec<String> {
        self.finishes.iter().map(|(_, s)| s.clone()).collect()
    }

    pub fn is_final(&self) -> bool {
        // and no text came after the latest number (another choice still streaming)
        self.finish_doc.is_some_and(|f| self.usage_doc >= f) && self.usage_doc >= self.text_doc
    }
    /// The reported numbers in the common meaning (see docs/providers.md,
    /// "Usage semantics"): the format's arithmetic, then one rule for every
    /// provider: a total that equals prompt + completion + reasoning means the
    /// completion excluded reasoning (xAI), so reasoning is added to it.
    pub fn numbers(&self, f: Arithmetic) -> Numbers {
        let alt = field::ALT_INPUT..=field::ALT_OUTPUT;
        let proper = (0..field::SLOTS as Field).filter(|s| !alt.contains(s));
        if !proper.into_iter().any(|s| self.has(s)) {
            // only a server's own counters (llama.cpp `timings`)
            let cached = self.get(field::ALT_CACHED);
            return Numbers {
                prompt: self.get(field::ALT_INPUT).saturating_add(cached),
                completion: self.get(field::ALT_OUTPUT),
                total: self
                    .get(field::ALT_INPUT)
                    .saturating_add(cached)
                    .saturating_add(self.get(field::ALT_OUTPUT)),
                cached,
                ..Numbers::default()
            };
        }
        let cached = self.get_or_sum(field::CACHED, field::SUM_CACHED);
        let cache_write = self.get_or_sum(field::CACHE_WRITE, field::SUM_CACHE_WRITE);
        let reasoning = self.get(field::REASONING);
        let mut prompt = self
            .get_or_sum(field::INPUT, field::SUM_INPUT)
            .saturating_add(self.get(field::EXTRA_INPUT));
        if f.prompt_adds_cache {
            prompt = prompt.saturating_add(cached).saturating_add(cache_write);
        }
        let mut completion = self.get_or_sum(field::OUTPUT, field::SUM_OUTPUT);
        if f.completion_adds_reasoning {
            completion = completion.saturating_add(reasoning);
        }
        let total = match self.slot(field::TOTAL) {
            // a total beside summed slots is the top level's, not theirs
            Some(t) if !self.has(field::SUM_INPUT) && !self.has(field::SUM_OUTPUT) => {
                if reasoning > 0
                    && prompt
                        .checked_add(completion)
                        .and_then(|s| s.checked_add(reasoning))
                        == Some(t)
                {
                    completion += reasoning;
                }
                t
            }
            _ => prompt.saturating_add(completion),
        };
        Numbers {
            prompt,
            completion,
            total,
            cached,
            cache_write,
            reasoning,
        }
    }
}

impl Sink for UsageAcc {
    fn int(&mut self, f: Field, v: u64) {
        let Some(slot) = self.slots.get_mut(f as usize) else {
            return;
        };
        self.usage_doc = self.doc;
        let new = if (field::SUM_INPUT..=field::SUM_CACHE_WRITE).contains(&f) {
            slot.unwrap_or(0).saturating_add(v)
        } else {
            v
        };
        if *slot != Some(new) {
            *slot = Some(new);
            self.changes += 1;
        }
    }
    fn boolean(&mut self, f: Field, v: bool) {
        if f == field::FINISH && v {
            self.finish_doc.get_or_insert(self.doc);
        }
    }
    fn str_start(&mut self, f: Field) {
        match f {
            field::MODEL => self.model_buf.start(),
            field::FINISH => self.finish_buf.start(),
            field::RESPONSE_ID if self.response_id.is_none() => self.id_buf.start(),
            _ => {}
        }
    }
    fn str_piece(&mut self, f: Field, s: &[u8]) {
        match f {
            field::MODEL => self.model_buf.push(s),
            field::FINISH => {
                // a finish reason is a non-empty string (TGI and others send "" on every chunk)
                if !s.is_empty() {
                    self.finish_doc.get_or_insert(self.doc);
                }
                self.finish_buf.push(s);
            }
            // streams repeat the id in every chunk: once one is kept, the rest are ignored
            field::RESPONSE_ID if self.response_id.is_none() => self.id_buf.push(s),
            _ => {}
        }
    }
    fn str_end(&mut self, f: Field) {
        match f {
            // streams repeat the model in every chunk: build the String only when it changes
            field::MODEL if self.model_buf.valid() && self.model_bytes != self.model_buf.buf => {
                self.model_bytes.clone_from(&self.model_buf.buf);
                self.provider_model = self.model_buf.take();
                self.changes += 1;
            }
            // an invalid reason (empty, too long, not printable) leaves the held one
            field::FINISH if self.finish_buf.valid() && printable(&self.finish_buf.buf) => {
                self.finish_held.clone_from(&self.finish_buf.buf);
                self.finish_pending = true;
            }
            field::RESPONSE_ID
                if self.response_id.is_none()
                    && self.id_buf.valid()
                    && printable(&self.id_buf.buf) =>
            {
                self.response_id = self.id_buf.take();
                self.changes += 1;
            }
            _ => {}
        }
    }
    fn enter(&mut self, mark: Field) {
        match mark {
            field::ERROR => self.errors += 1,
            field::USAGE_RESET => self.slots = [None; field::SLOTS],
            field::SUM_RESET => {
                for s in field::SUM_INPUT..=field::SUM_CACHE_WRITE {
                    self.slots[s as usize] = None;
                }
            }
            field::ROOT => self.doc += 1,
            field::FINAL => {
                self.finish_doc.get_or_insert(self.doc);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(values: &[(Field, u64)]) -> UsageAcc {
        let mut a = UsageAcc::default();
        for &(f, v) in values {
            a.int(f, v);
        }
        a
    }

    #[test]
    fn a_completion_without_its_reasoning_gets_it_added() {
        use field::*;
        // xAI: 291 + 26 + 189 = 506
        let n = acc(&[(INPUT, 291), (OUTPUT, 26), (REASONING, 189), (TOTAL, 506)])
            .numbers(Arithmetic::AS_REPORTED);
        assert_eq!(
            (n.prompt, n.completion, n.total, n.reasoning),
            (291, 215, 506, 189)
        );
        // OpenAI: the completion already holds the reasoning
        let n = acc(&[(INPUT, 10), (OUTPUT, 50), (REASONING, 40), (TOTAL, 60)])
            .numbers(Arithmetic::AS_REPORTED);
        assert_eq!((n.completion, n.total), (50, 60));
        let only_reasoning = acc(&[(REASONING, 1)]).numbers(Arithmetic::AS_REPORTED);
        assert_eq!((only_reasoning.reasoning, only_reasoning.total), (1, 0));
    }

    #[test]
    fn sums_replace_the_top_level_and_alt_counts_only_alone() {
        use field::*;
        let mut a = acc(&[(INPUT, 682), (OUTPUT, 1320)]);
        a.enter(SUM_RESET);
        for (i, o) in [(60385, 592), (682, 1320)] {
            a.int(SUM_INPUT, i);
            a.int(SUM_OUTPUT, o);
        }
        let n = a.numbers(Arithmetic::PROMPT_ADDS_CACHE);
        assert_eq!((n.prompt, n.completion, n.total), (61067, 1912, 62979));
        a.enter(SUM_RESET);
        assert_eq!(a.numbers(Arithmetic::PROMPT_ADDS_CACHE).prompt, 682);
        let n = acc(&[(ALT_INPUT, 75), (ALT_CACHED, 5), (ALT_OUTPUT, 31)])
            .numbers(Arithmetic::AS_REPORTED);
        assert_eq!(
            (n.prompt, n.completion, n.total, n.cached),
            (80, 31, 111, 5)
        );
        let n = acc(&[(ALT_INPUT, 75), (INPUT, 80)]).numbers(Arithmetic::AS_REPORTED);
        assert_eq!(n.prompt, 80);
    }

    fn string(a: &mut UsageAcc, f: Field, pieces: &[&[u8]]) {
        a.str_start(f);
        for p in pieces {
            a.str_piece(f, p);
        }
        a.str_end(f);
    }

    #[test]
    fn the_first_valid_response_id_wins_and_hostile_ones_are_dropped() {
        use field::*;
        let mut a = UsageAcc::default();
        string(&mut a, RESPONSE_ID, &[b""]);
        string(&mut a, RESPONSE_ID, &[&[b'x'; 200], &[b'y'; 57]]); // 257 bytes: dropped, not cut
        string(&mut a, RESPONSE_ID, &[b"chatcmpl-\n1"]);
        string(&mut a, RESPONSE_ID, &[b"caf\xc3\xa9"]);
        string(&mut a, RESPONSE_ID, &[b"del\x7f"]);
        assert_eq!((a.response_id.as_deref(), a.changes), (None, 0));
        let longest = [b'r'; RESPONSE_ID_MAX];
        string(&mut a, RESPONSE_ID, &[&longest[..100], &longest[100..]]);
        string(&mut a, RESPONSE_ID, &[b"chatcmpl-2"]);
        assert_eq!(a.response_id.as_deref(), Some("r".repeat(256).as_str()));
        assert_eq!(a.changes, 1);
    }

    #[test]
    fn finish_reasons_by_choice_index_bounded() {
        use field::*;
        let mut a = UsageAcc::default();
        let reason = |a: &mut UsageAcc, pieces: &[&[u8]], choice: u64| {
            string(a, FINISH, pieces);
            a.commit_finish(choice);
        };
        reason(&mut a, &[b"len", b"gth"], 2);
        reason(&mut a, &[b"stop"], 0);
        assert_eq!(a.finish_reasons(), ["stop", "length"]);
        // a later reason of an index replaces the earlier; invalid ones are ignored
        reason(&mut a, &[b"tool_calls"], 2);
        reason(&mut a, &[b""], 0);
        reason(&mut a, &[b"st\top"], 0);
        reason(&mut a, &[&[b'x'; 65]], 0);
        reason(&mut a, &[b"\xe2\x9c\x93"], 0);
        assert_eq!(a.finish_reasons(), ["stop", "tool_calls"]);
        // an invalid reason leaves the valid one held in the same choice
        string(&mut a, FINISH, &[b"content_filter"]);
        string(&mut a, FINISH, &[b""]);
        a.commit_finish(1);
        a.commit_finish(1); // nothing held any more
        assert_eq!(a.finish_reasons(), ["stop", "content_filter", "tool_calls"]);
        let changes = a.changes;
        reason(&mut a, &[b"stop"], 0); // the same value: no change
        assert_eq!(a.changes, changes);
        // at most 16 indexes; a known index still takes a new reason
        for i in 3..40 {
            reason(&mut a, &[&[b'a'; FINISH_REASON_MAX]], i);
        }
        reason(&mut a, &[b"length"], 0);
        let got = a.finish_reasons();
        assert_eq!(got.len(), FINISH_REASONS_MAX);
        assert_eq!(&got[..3], ["length", "content_filter", "tool_calls"]);
        assert_eq!(got[15], "a".repeat(64));
        assert_eq!(a.finishes.last().map(|e| e.0), Some(15));
    }

    #[test]
    fn usage_is_final_from_the_document_of_a_finish_reason_on() {
        use field::*;
        let mut a = UsageAcc::default();
        a.enter(ROOT);
        a.int(OUTPUT, 1);
        assert!(!a.is_final());
        a.enter(ROOT);
        a.str_start(FINISH);
        a.str_piece(FINISH, b"");
        a.enter(ROOT);
        a.str_start(FINISH);
        a.str_piece(FINISH, b"stop");
        assert!(!a.is_final()); // the number came before the finish reason
        a.int(OUTPUT, 15);
        assert!(a.is_final());
        a.enter(ROOT);
        a.int(OUTPUT, 16); // a later number stays final
        assert!(a.is_final());
        let mut b = UsageAcc::default();
        b.boolean(FINISH, false);
        b.int(OUTPUT, 1);
        assert!(!b.is_final());
        b.mark_final();
        assert!(b.is_final());
    }
}
