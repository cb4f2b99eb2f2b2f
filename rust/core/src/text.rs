//! Output text of a response, counted while it streams, for responses
//! without provider usage. Each kind of text (content, refusal, reasoning,
//! tool name, tool arguments) of each choice (or content block) and each
//! tool call is its own text: tokens never join across them.

use crate::field::*;
use crate::tokens::{default_encoding, encoding_for_model, Encoding, TextCounter};

/// Most texts tracked per response; more share the last one (bounded memory).
pub const MAX_TEXTS: usize = 64;
/// Text bytes a response holds uncounted between sweeps. A response whose
/// provider reports final usage never needs its text counted, so text is
/// only held until this much arrived (then every text due is settled, as
/// `TextCounter::push` would), or until a snapshot needs the count.
pub const LAZY_BYTES: usize = 16 << 10;

pub struct TextState {
    /// The request's model, which picks the encoding when known.
    model: Option<String>,
    enc: Option<Encoding>,
    pub(crate) texts: Vec<((u64, u64, Field), TextCounter)>,
    choice: u64,
    choice_pos: u64,
    tool: u64,
    tool_pos: u64,
    cur: Option<usize>,
    /// Text bytes pushed since the last sweep.
    fresh: usize,
    /// Grows with every text begun and every piece of text counted.
    pub changes: u64,
}

impl TextState {
    pub fn new(model: Option<String>) -> Self {
        TextState {
            model,
            enc: None,
            texts: Vec::new(),
            choice: 0,
            choice_pos: 0,
            tool: 0,
            tool_pos: 0,
            cur: None,
            fresh: 0,
            changes: 0,
        }
    }

    pub fn enter(&mut self, mark: Field) {
        match mark {
            ROOT => {
                (self.choice, self.choice_pos, self.tool, self.tool_pos) = (0, 0, 0, 0);
            }
            CHOICE => {
                self.choice = self.choice_pos;
                self.choice_pos += 1;
                (self.tool, self.tool_pos) = (0, 0);
            }
            TOOL => {
                self.tool = self.tool_pos;
                self.tool_pos += 1;
            }
            _ => {}
        }
    }

    /// The index of the current choice: its `index` key, else its position.
    pub fn choice(&self) -> u64 {
        self.choice
    }

    pub fn index(&mut self, f: Field, v: u64) {
        match f {
            CHOICE_INDEX => self.choice = v,
            TOOL_INDEX => self.tool = v,
            _ => {}
        }
    }

    /// A text string starts; the encoding is the request model's, else (a name
    /// without a public tokenizer, such as an Azure deployment's) `provider_model`'s.
    pub fn start(&mut self, f: Field, provider_model: Option<&str>) {
        let model = self.model.as_deref();
        let enc = *self.enc.get_or_insert_with(|| {
            model
                .and_then(encoding_for_model)
                .or_else(|| provider_model.and_then(encoding_for_model))
                .unwrap_or_else(default_encoding)
        });
        let key = (self.choice, self.tool, f);
        let i = match self.texts.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None if self.texts.len() < MAX_TEXTS => {
                self.texts.push((key, TextCounter::new(enc)));
                self.texts.len() - 1
            }
            None => MAX_TEXTS - 1,
        };
        self.cur = Some(i);
        self.changes += 1;
    }

    pub fn piece(&mut self, s: &[u8]) {
        if let Some(i) = self.cur {
            self.texts[i].1.push_held(s);
            self.changes += 1;
            self.fresh += s.len();
            if self.fresh >= LAZY_BYTES {
                self.fresh = 0;
                for (_, c) in &mut self.texts {
                    c.settle_due();
                }
            }
        }
    }

    /// Settle every text (see `TextCounter::settle_now`).
    pub fn settle(&mut self) {
        self.fresh = 0;
        for (_, c) in &mut self.texts {
            c.settle_now();
        }
    }

    pub fn end(&mut self) {
        self.cur = None;
    }

    pub fn seen(&self) -> bool {
        !self.texts.is_empty()
    }

    /// (all output tokens, reasoning tokens); `exact`: else each text's
    /// `TextCounter::total_soon` (a snapshot's). Reasoning sent under several
    /// names for one choice (and tool call) counts once: the largest.
    pub fn totals(&mut self, exact: bool) -> (u64, u64) {
        let counts: Vec<u64> = self
            .texts
            .iter_mut()
            .map(|(_, c)| if exact { c.total() } else { c.total_soon() })
            .collect();
        let (mut other, mut reasoning) = (0u64, 0u64);
        for (i, ((choice, tool, f), _)) in self.texts.iter().enumerate() {
            if !is_reasoning(*f) {
                other = other.saturating_add(counts[i]);
                continue;
            }
            let same = |j: &usize| {
                let (c, t, g) = self.texts[*j].0;
                c == *choice && t == *tool && is_reasoning(g)
            };
            if (0..self.texts.len()).find(same) == Some(i) {
                let most = (0..self.texts.len()).filter(same).map(|j| counts[j]).max();
                reasoning = reasoning.saturating_add(most.unwrap_or(0));
            }
        }
        (other.saturating_add(reasoning), reasoning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::{T_CONTENT, T_CONTENT as CONTENT, T_REASONING as REASONING_CONTENT};
    use crate::tokens::MIN_BATCH;

    fn words(n: usize, seed: usize) -> String {
        let w = [
            " token",
            " counting",
            "\n\n",
            " 中文",
            "😀",
            " it's",
            " HELLO",
            " x",
            "  ",
            " 1234567",
        ];
        (0..n).map(|i| w[(i * 7 + seed) % w.len()]).collect()
    }

    #[test]
    fn held_text_stays_bounded_without_snapshots_and_counts_exactly() {
        let enc = Encoding::O200k;
        let (a, b) = (words(40_000, 1), words(25_000, 4));
        let mut t = TextState::new(Some("gpt-4o".into()));
        // two texts interleaved in 7-byte pieces (cutting inside characters), never snapshotted
        let (ab, bb) = (a.as_bytes(), b.as_bytes());
        for i in (0..ab.len().max(bb.len())).step_by(7) {
            for (f, s) in [(CONTENT, ab), (REASONING_CONTENT, bb)] {
                if i < s.len() {
                    t.start(f, None);
                    t.piece(&s[i..(i + 7).min(s.len())]);
                    t.end();
                }
            }
            for (_, c) in &t.texts {
                let (held, _) = c.state();
                assert!(held < LAZY_BYTES + 2 * MIN_BATCH, "held {held} at {i}");
            }
        }
        let (ca, cb) = (enc.count(&a), enc.count(&b));
        assert_eq!(t.totals(true), (ca + cb, cb));
        t.settle();
        assert_eq!(t.totals(true), (ca + cb, cb));
    }

    #[test]
    fn texts_that_got_nothing_new_cost_a_snapshot_nothing() {
        // 63 tool calls left holding 1,000 letters each (one piece, under LONG_HELD), then 2,000 deltas to
        // another text, a snapshot after each: was 63 KiB of BPE per snapshot (83 s for 20,000 deltas)
        let mut t = TextState::new(Some("gpt-4o".into()));
        let run: String = (0..1000)
            .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
            .collect();
        for i in 0..63 {
            t.enter(crate::field::TOOL);
            t.index(crate::field::TOOL_INDEX, i + 1);
            t.start(T_CONTENT, None);
            t.piece(run.as_bytes());
            t.end();
        }
        t.enter(crate::field::TOOL);
        t.index(crate::field::TOOL_INDEX, 0);
        for _ in 0..2000 {
            t.start(CONTENT, None);
            t.piece(b" word");
            t.end();
            t.settle();
            t.totals(false);
        }
        let work: usize = t.texts.iter().map(|(_, c)| c.work()).sum();
        assert!(work < 2_000_000, "{work} bytes split or counted");
        let want = 63 * Encoding::O200k.count(&run) + Encoding::O200k.count(&" word".repeat(2000));
        assert_eq!(t.totals(true).0, want);
    }

    #[test]
    fn text_is_held_uncounted_until_a_sweep() {
        let mut t = TextState::new(Some("gpt-4o".into()));
        t.start(CONTENT, None);
        let text = words(1500, 2); // under LAZY_BYTES
        assert!(text.len() > MIN_BATCH && text.len() < LAZY_BYTES);
        t.piece(text.as_bytes());
        assert_eq!(t.texts[0].1.state(), (text.len(), 0));
        t.settle();
        assert!(t.texts[0].1.state().1 > 0);
        assert_eq!(t.totals(true).0, Encoding::O200k.count(&text));
    }
}
