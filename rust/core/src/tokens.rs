//! Exact token counting with OpenAI's BPE encodings, as tiktoken counts.
//!
//! - [`Encoding::count`]: the count of a whole text (`len(tiktoken.encode_ordinary(text))`).
//! - [`TextCounter`]: the same count for text that arrives in pieces of any
//!   size (split inside words, inside UTF-8 sequences). The pre-tokenizer
//!   splits the held text; every piece but the last two is final (appending
//!   text can only change the last two: a word that grows, a contraction that
//!   joins its word, whitespace whose look-ahead changes), so those are
//!   counted and dropped. The held text is re-split only after as many new
//!   bytes arrived as it holds (at least [`MIN_BATCH`]), which keeps the
//!   total work linear in the text length.
//!
//! The split is the hand-written pre-tokenizer of `pretokenize.rs`; a piece
//! that is a token counts one, the others go to bpe-openai's byte-pair
//! encoder. bpe-openai's own regex split and count are the tests' oracle.

use crate::pretokenize::{self, Pattern};
use bpe_openai::byte_pair_encoding::BytePairEncoding;
use bpe_openai::Tokenizer;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::LazyLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Cl100k,
    O200k,
}

pub const ENCODINGS: [&str; 2] = ["o200k_base", "cl100k_base"];

impl Encoding {
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "cl100k_base" => Some(Encoding::Cl100k),
            "o200k_base" => Some(Encoding::O200k),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100k => "cl100k_base",
            Encoding::O200k => "o200k_base",
        }
    }

    fn tokenizer(self) -> &'static Tokenizer {
        match self {
            Encoding::Cl100k => bpe_openai::cl100k_base(),
            Encoding::O200k => bpe_openai::o200k_base(),
        }
    }

    fn pattern(self) -> Pattern {
        match self {
            Encoding::Cl100k => Pattern::Cl100k,
            Encoding::O200k => Pattern::O200k,
        }
    }

    fn vocab(self) -> &'static Vocab {
        static CL100K: LazyLock<Vocab> = LazyLock::new(|| Vocab::new(Encoding::Cl100k));
        static O200K: LazyLock<Vocab> = LazyLock::new(|| Vocab::new(Encoding::O200k));
        match self {
            Encoding::Cl100k => &CL100K,
            Encoding::O200k => &O200K,
        }
    }

    /// The pre-tokenizer's pieces of `text`.
    fn split(self, text: &str) -> pretokenize::Pieces<'_> {
        pretokenize::split(self.pattern(), text)
    }

    /// Tokens of `text`, as `len(tiktoken.get_encoding(name).encode_ordinary(text))`.
    pub fn count(self, text: &str) -> u64 {
        let vocab = self.vocab();
        if text.len() < Recent::WORTH_IT {
            return self.split(text).map(|piece| vocab.count(piece)).sum();
        }
        let mut recent = Recent::new(text.len());
        self.split(text)
            .map(|piece| recent.count(vocab, piece))
            .sum()
    }
}

/// The counts of recent short pieces, for one long text: a direct-mapped
/// table small enough to stay in the CPU cache, unlike the vocabulary's
/// table and the byte-pair encoder's data. Words repeat, so most pieces of a
/// long text are found here.
struct Recent {
    slots: Vec<RecentSlot>,
    shift: u32,
    /// Boundaries between multi-byte characters checked in long pieces, and
    /// the cuts found there, recently (both halved now and then): cutting
    /// pays where a text's characters seldom join (see [`Recent::cutting`]).
    checked: u32,
    cuts: u32,
    /// Long pieces counted uncut since cutting last stopped paying.
    uncut: u32,
}

#[derive(Clone, Copy, Default)]
struct RecentSlot {
    /// the piece's bytes (see [`short_key`])
    key: [u64; 2],
    /// the piece's length (0: empty slot; pieces are never empty)
    len: u32,
    count: u32,
}

impl Recent {
    /// Texts shorter than this are counted without the table.
    const WORTH_IT: usize = 2048;
    /// Longest piece kept.
    const MAX_LEN: usize = 16;
    /// Cutting stops while fewer than one checked boundary in this many is a cut.
    const CUT_RATE: u32 = 8;
    /// While cutting does not pay, one long piece in this many is cut all the
    /// same, and decides anew (the text may change language).
    const PROBE_EVERY: u32 = 32;

    /// A table of about one slot per 16 bytes of text, 256 to 16384 slots.
    fn new(text_len: usize) -> Recent {
        let n = (text_len / 16).next_power_of_two().clamp(256, 16384);
        Recent {
            slots: vec![RecentSlot::default(); n],
            shift: 64 - n.trailing_zeros(),
            checked: 0,
            cuts: 0,
            uncut: 0,
        }
    }

    /// Whether to cut the next long piece: while the cuts found recently are
    /// frequent enough to pay for the checks. Measured on 300 KB texts,
    /// o200k_base: Chinese drawn at random (56% of boundaries cut) 40 -> 58
    /// MB/s, Japanese (51%) 41 -> 65 MB/s; Hindi (4%) 79 -> 62 MB/s had every
    /// piece been cut. The count is exact either way.
    fn cutting(&mut self) -> bool {
        if self.cuts * Self::CUT_RATE >= self.checked {
            return true;
        }
        self.uncut += 1;
        if self.uncut < Self::PROBE_EVERY {
            return false;
        }
        // a probe: what it finds decides alone (the text may have changed since)
        (self.uncut, self.checked, self.cuts) = (0, 0, 0);
        true
    }

    fn count(&mut self, vocab: &Vocab, piece: &str) -> u64 {
        let bytes = piece.as_bytes();
        if bytes.len() > Self::MAX_LEN {
            if piece.is_ascii() || vocab.is_token(bytes) || !self.cutting() {
                return vocab.count(piece);
            }
            return self.count_parts(vocab, piece);
        }
        self.count_short(vocab, piece)
    }

    /// A long piece with multi-byte characters (a run of CJK text is one
    /// piece, dozens of bytes): cut where no token of the vocabulary can
    /// span ([`Vocab::joinable`]), no merge crosses the cut, so the piece
    /// counts as its parts do, and short parts (words) are found in the table.
    fn count_parts(&mut self, vocab: &Vocab, piece: &str) -> u64 {
        let bytes = piece.as_bytes();
        let (mut total, mut start, mut checked) = (0, 0, 0);
        let mut prev = 0..0;
        for (i, c) in piece.char_indices() {
            let here = i..i + c.len_utf8();
            if prev.len() > 1 && here.len() > 1 {
                checked += 1;
                if !vocab.joinable(&bytes[prev.clone()], &bytes[here.clone()]) {
                    total += self.count_short_or_long(vocab, &piece[start..i]);
                    start = i;
                    self.cuts += 1;
                }
            }
            prev = here;
        }
        self.checked += checked;
        if self.checked > 1 << 12 {
            (self.checked, self.cuts) = (self.checked / 2, self.cuts / 2);
        }
        total + self.count_short_or_long(vocab, &piece[start..])
    }

    fn count_short_or_long(&mut self, vocab: &Vocab, part: &str) -> u64 {
        if part.len() > Self::MAX_LEN {
            vocab.count(part)
        } else {
            self.count_short(vocab, part)
        }
    }

    fn count_short(&mut self, vocab: &Vocab, piece: &str) -> u64 {
        let bytes = piece.as_bytes();
        let key = short_key(bytes);
        let len = bytes.len() as u32;
        let h = (key[0] ^ key[1].rotate_left(31) ^ len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = &mut self.slots[(h >> self.shift) as usize];
        if slot.len == len && slot.key == key {
            return slot.count as u64;
        }
        let count = vocab.count(piece);
        *slot = RecentSlot {
            key,
            len,
            count: count as u32,
        };
        count
    }
}

/// 1 to 16 bytes as two words, distinct for distinct strings of one length:
/// their first and last 8 (or 4) bytes, overlapping, or for 1 to 3 bytes the
/// first, middle and last. (Loads, not a copy to a buffer, which would stall.)
#[inline(always)]
fn short_key(b: &[u8]) -> [u64; 2] {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let half = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as u64;
    let n = b.len();
    match n {
        8.. => [word(0), word(n - 8)],
        4..=7 => [half(0), half(n - 4)],
        _ => [
            b[0] as u64 | (b[n / 2] as u64) << 8 | (b[n - 1] as u64) << 16,
            0,
        ],
    }
}

/// The BPE of one encoding, and a hash set of its tokens: a piece that is a
/// token is that one token (tiktoken looks pieces up the same way first),
/// which spares the byte-pair encoder most pieces of prose and code.
struct Vocab {
    bpe: &'static BytePairEncoding,
    /// token id + 1 (0: empty slot), open addressing
    slots: Vec<u32>,
    longest: usize,
    /// Where tokens join two multi-byte characters: (the end of the first in
    /// the token, from its lead byte or the token's start; the start of the
    /// second, to the next lead byte or the token's end), packed by
    /// [`join_key`]; open addressing, 0 an empty slot.
    joins: Vec<u64>,
    /// A necessary condition for a join other than of two whole characters:
    /// bit `(a's last byte & 63) * 64 + (b's first byte & 63)` is set for
    /// every such join (a token starting or ending inside a character), so a
    /// boundary whose bit is clear needs one look-up, of its two whole
    /// characters, instead of one per pair of their ends (nine for CJK).
    partial: [u64; 64],
}

/// Up to 4 bytes, each >= 0x80 (a piece of a multi-byte character), as a u32.
fn pack(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64)
}

fn join_key(end: &[u8], start: &[u8]) -> u64 {
    pack(end) << 32 | pack(start)
}

fn join_slot(key: u64, mask: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

/// The length of a UTF-8 character from its lead byte (>= 0xC0).
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        _ => 2,
    }
}

/// Every join of two multi-byte characters inside a token of `bpe` (see
/// `Vocab::joins`), and those not of two whole characters (`Vocab::partial`).
fn joins_of(bpe: &BytePairEncoding) -> (Vec<u64>, [u64; 64]) {
    let cont = |b: u8| b & 0xC0 == 0x80;
    let (mut keys, mut partial) = (Vec::new(), [0u64; 64]);
    for id in 0..bpe.num_tokens() as u32 {
        let t = bpe.token_bytes(id);
        for i in 1..t.len() {
            if t[i] < 0xC0 || t[i - 1] < 0x80 {
                continue; // not a multi-byte character's lead byte after one's byte
            }
            // the first character's end: from its lead byte, or from the token's start
            let mut j = i - 1;
            while j > 0 && cont(t[j]) {
                j -= 1;
            }
            if t[j] < 0x80 {
                continue; // continuation bytes after ASCII: no valid text has them
            }
            let k = (i + 1..t.len()).find(|&k| !cont(t[k])).unwrap_or(t.len());
            if i - j <= 4 && k - i <= 4 {
                keys.push(join_key(&t[j..i], &t[i..k]));
                let whole = |c: &[u8]| c[0] >= 0xC0 && c.len() == char_len(c[0]);
                if !(whole(&t[j..i]) && whole(&t[i..k])) {
                    partial[(t[i - 1] & 63) as usize] |= 1 << (t[i] & 63);
                }
            }
        }
    }
    let size = (keys.len() * 2).next_power_of_two().max(2);
    let mut slots = vec![0u64; size];
    for key in keys {
        let mut i = join_slot(key, size - 1);
        while slots[i] != 0 && slots[i] != key {
            i = (i + 1) & (size - 1);
        }
        slots[i] = key;
    }
    (slots, partial)
}

impl Vocab {
    fn new(enc: Encoding) -> Vocab {
        let bpe = &enc.tokenizer().bpe;
        let n = bpe.num_tokens();
        let size = (n * 2).next_power_of_two();
        let mut slots = vec![0u32; size];
        let mut longest = 0;
        for id in 0..n as u32 {
            let bytes = bpe.token_bytes(id);
            longest = longest.max(bytes.len());
            let mut i = hash(bytes) as usize & (size - 1);
            while slots[i] != 0 {
                i = (i + 1) & (size - 1);
            }
            slots[i] = id + 1;
        }
        let (joins, partial) = joins_of(bpe);
        Vocab {
            bpe,
            slots,
            longest,
            joins,
            partial,
        }
    }

    /// Whether a token may span the boundary between the characters `a` and
    /// `b` (multi-byte, adjacent in a text): whether a token joins an end of
    /// `a` to a start of `b`. Where none can, byte-pair merging never
    /// crosses the boundary.
    fn joinable(&self, a: &[u8], b: &[u8]) -> bool {
        if self.joins_at(join_key(a, b)) {
            return true;
        }
        if self.partial[(a[a.len() - 1] & 63) as usize] & 1 << (b[0] & 63) == 0 {
            return false; // no token starting or ending inside a or b joins them
        }
        (1..=a.len())
            .any(|x| (1..=b.len()).any(|y| self.joins_at(join_key(&a[a.len() - x..], &b[..y]))))
    }

    fn joins_at(&self, key: u64) -> bool {
        let mask = self.joins.len() - 1;
        let mut i = join_slot(key, mask);
        loop {
            match self.joins[i] {
                0 => return false,
                k if k == key => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn is_token(&self, piece: &[u8]) -> bool {
        if piece.len() > self.longest {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = hash(piece) as usize & mask;
        loop {
            match self.slots[i] {
                0 => return false,
                id if self.bpe.token_bytes(id - 1) == piece => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Tokens of one pre-tokenizer piece.
    fn count(&self, piece: &str) -> u64 {
        let bytes = piece.as_bytes();
        if self.is_token(bytes) {
            1
        } else {
            self.bpe.count(bytes) as u64
        }
    }
}

/// A fast hash of a short byte string (8 bytes at a time, multiply and mix).
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    h ^ (h >> 32)
}

/// Exact model names, then prefixes, as tiktoken maps them (cl100k/o200k only).
pub(crate) const MODELS: [(&str, Encoding); 15] = [
    ("o1", Encoding::O200k),
    ("o3", Encoding::O200k),
    ("o4-mini", Encoding::O200k),
    ("gpt-5", Encoding::O200k),
    ("gpt-4.1", Encoding::O200k),
    ("gpt-4o", Encoding::O200k),
    ("gpt-4", Encoding::Cl100k),
    ("gpt-3.5-turbo", Encoding::Cl100k),
    ("gpt-3.5", Encoding::Cl100k),
    ("gpt-35-turbo", Encoding::Cl100k),
    ("davinci-002", Encoding::Cl100k),
    ("babbage-002", Encoding::Cl100k),
    ("text-embedding-ada-002", Encoding::Cl100k),
    ("text-embedding-3-small", Encoding::Cl100k),
    ("text-embedding-3-large", Encoding::Cl100k),
];
pub(crate) const PREFIXES: [(&str, Encoding); 16] = [
    ("o1-", Encoding::O200k),
    ("o3-", Encoding::O200k),
    ("o4-mini-", Encoding::O200k),
    ("gpt-5", Encoding::O200k),
    ("gpt-4.5-", Encoding::O200k),
    ("gpt-4.1-", Encoding::O200k),
    ("chatgpt-4o-", Encoding::O200k),
    ("gpt-4o-", Encoding::O200k),
    ("gpt-4-", Encoding::Cl100k),
    ("gpt-3.5-turbo-", Encoding::Cl100k),
    ("gpt-35-turbo-", Encoding::Cl100k),
    ("ft:gpt-4o", Encoding::O200k),
    ("ft:gpt-4", Encoding::Cl100k),
    ("ft:gpt-3.5-turbo", Encoding::Cl100k),
    ("ft:davinci-002", Encoding::Cl100k),
    ("ft:babbage-002", Encoding::Cl100k),
];

/// The encoding tiktoken uses for `model`, or None (no public tokenizer).
pub fn encoding_for_model(model: &str) -> Option<Encoding> {
    MODELS
        .iter()
        .find(|(m, _)| *m == model)
        .or_else(|| PREFIXES.iter().find(|(p, _)| model.starts_with(p)))
        .map(|(_, e)| *e)
}

static DEFAULT: AtomicU8 = AtomicU8::new(0); // 0: o200k_base, 1: cl100k_base

/// The encoding for models without a public tokenizer (process-wide).
pub fn default_encoding() -> Encoding {
    if DEFAULT.load(Ordering::Relaxed) == 1 {
        Encoding::Cl100k
    } else {
        Encoding::O200k
    }
}

pub fn set_default_encoding(e: Encoding) {
    DEFAULT.store(if e == Encoding::Cl100k { 1 } else { 0 }, Ordering::Relaxed);
}

/// The encoding for an optional model name.
pub fn encoding_for(model: Option<&str>) -> Encoding {
    model
        .and_then(encoding_for_model)
        .unwrap_or_else(default_encoding)
}

/// Count `text` with an explicit encoding name, else the model's encoding,
/// else the default. Err(name) for an unknown encoding name.
pub fn count_tokens(
    text: &str,
    model: Option<&str>,
    encoding: Option<&str>,
) -> Result<u64, String> {
    let enc = match encoding {
        Some(name) => Encoding::from_name(name).ok_or_else(|| name.to_string())?,
        None => encoding_for(model),
    };
    Ok(enc.count(text))
}

/// Re-split the held text after at least this many new bytes.
pub const MIN_BATCH: usize = 4096;
/// Longest text held back; past it (one pre-tokenizer piece over 1 MiB)
/// pieces are counted as they stand, the only case that may differ from tiktoken.
pub const MAX_HELD: usize = 1 << 20;

/// Held text past this many bytes (the last pieces are that long: a run of
/// letters, digits, spaces or punctuation without a break) is re-split and
/// counted for a snapshot only once it grew by half since it was last counted;
/// in between a snapshot takes that count plus one token per new byte plus
/// [`LONG_SLACK`]. What a finish counts is exact. This keeps a snapshot after
/// every chunk linear overall on such text: recounting a long piece per chunk
/// was quadratic (38.7 s for 1 MiB of letters in 1,000-byte deltas).
pub const LONG_HELD: usize = 1024;
/// What the estimate adds for tokens that new bytes make of old ones: a byte
/// can add more than one token (a space run's last space joins a digit after
/// it; BPE: "shhecuda" is 3 tokens, "shhecudaj" 5). Appending one byte added at
/// most 2 more than one per byte in the cases tests and a fuzzer tried.
pub const LONG_SLACK: u64 = 8;

/// Counts text that arrives in pieces; equal to counting the whole.
pub struct TextCounter {
    enc: Encoding,
    held: String,
    /// Bytes of an incomplete UTF-8 sequence at the end of the input.
    partial: Vec<u8>,
    /// Bytes pushed since the last settle, and the held length it left.
    fresh: usize,
    settled_len: usize,
    tokens: u64,
    /// (bytes, tokens) of the held text (without an incomplete UTF-8 sequence
    /// at its end) when a snapshot last counted it past `LONG_HELD`; (0, 0)
    /// after a settle changed it.
    counted: (usize, u64),
    /// The exact count of what is held, while nothing was pushed or settled
    /// since it was made (a text that got no new bytes costs a snapshot nothing).
    cached: Option<u64>,
    /// Bytes split or counted so far (tests bound the work with it).
    #[cfg(test)]
    work: std::sync::atomic::AtomicUsize,
}

impl TextCounter {
    pub fn new(enc: Encoding) -> Self {
        TextCounter {
            enc,
            held: String::new(),
            partial: Vec::new(),
            fresh: 0,
            settled_len: 0,
            tokens: 0,
            counted: (0, 0),
            cached: None,
            #[cfg(test)]
            work: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Append UTF-8 bytes (invalid sequences count as U+FFFD, as a lossy decode of the whole would).
    pub fn push(&mut self, bytes: &[u8]) {
        self.push_held(bytes);
        self.settle_due();
    }

    /// Append without counting: the caller calls [`TextCounter::settle_due`]
    /// (or `settle_now`) when it wants the count kept current.
    pub fn push_held(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.cached = None;
        self.fresh += bytes.len();
        let joined;
        let mut rest = if self.partial.is_empty() {
            bytes
        } else {
            let mut v = std::mem::take(&mut self.partial);
            v.extend_from_slice(bytes);
            joined = v;
            &joined[..]
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.held.push_str(s);
                    break;
                }
                Err(e) => {
                    let (ok, tail) = rest.split_at(e.valid_up_to());
                    self.held
                        .push_str(std::str::from_utf8(ok).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            self.partial = tail.to_vec();
                            break;
                        }
                        Some(n) => {
                            self.held.push('\u{FFFD}');
                            rest = &tail[n..];
                        }
                    }
                }
            }
        }
    }

    /// Settle if as many new bytes arrived as the text holds (at least
    /// [`MIN_BATCH`]): what keeps the total work linear.
    pub fn settle_due(&mut self) {
        if self.fresh >= self.settled_len.max(MIN_BATCH) {
            self.settle();
        }
    }

    /// Count every piece that can no longer change.
    fn settle(&mut self) {
        self.fresh = 0;
        self.counted = (0, 0);
        self.cached = None;
        #[cfg(test)]
        self.work.fetch_add(self.held.len(), Ordering::Relaxed);
        let vocab = self.enc.vocab();
        let base = self.held.as_ptr() as usize;
        let (mut older, mut last): (Option<&str>, Option<&str>) = (None, None);
        let mut counted = 0u64;
        for piece in self.enc.split(&self.held) {
            if let Some(p) = older {
                counted += vocab.count(p);
            }
            older = last;
            last = Some(piece);
        }
        let keep = older
            .or(last)
            .map_or(self.held.len(), |p| p.as_ptr() as usize - base);
        self.tokens += counted;
        self.held.drain(..keep);
        if self.held.len() > MAX_HELD {
            self.tokens += self.enc.count(&self.held);
            self.held.clear();
        }
        self.settled_len = self.held.len();
    }

    /// Count what can no longer change now, so that `total` costs only the
    /// last two pieces (a snapshot after every chunk stays linear overall);
    /// past `LONG_HELD` held bytes, only once half as many new bytes arrived.
    pub fn settle_now(&mut self) {
        if self.fresh > 0 && (self.settled_len <= LONG_HELD || 2 * self.fresh >= self.settled_len) {
            self.settle();
        }
    }

    /// Bytes split or counted so far.
    #[cfg(test)]
    pub(crate) fn work(&self) -> usize {
        self.work.load(Ordering::Relaxed)
    }

    /// (bytes held uncounted, tokens counted so far): for tests of when counting happens.
    #[cfg(test)]
    pub(crate) fn state(&self) -> (usize, u64) {
        (self.held.len(), self.tokens)
    }

    /// Tokens so far, counting what is held as if the text ended here.
    pub fn total(&self) -> u64 {
        self.tokens + self.cached.unwrap_or_else(|| self.held_count())
    }

    /// `total` for a snapshot: past `LONG_HELD` held bytes, the count made when
    /// the held text was two thirds as long or longer, plus its new bytes and
    /// `LONG_SLACK` (see there).
    pub fn total_soon(&mut self) -> u64 {
        if let Some(count) = self.cached {
            return self.tokens + count;
        }
        let n = self.held.len() + self.partial.len();
        let (at, count) = self.counted;
        if n > LONG_HELD && at > 0 && n < at + at / 2 {
            return self.tokens + count + (n - at) as u64 + LONG_SLACK;
        }
        let count = self.held_count();
        self.cached = Some(count);
        if n > LONG_HELD {
            // a character cut at the end counts one U+FFFD now, maybe more tokens once whole: its bytes
            // are new bytes for the estimate
            let whole = if self.partial.is_empty() {
                count
            } else {
                self.count_of(&self.held)
            };
            self.counted = (self.held.len(), whole);
        }
        self.tokens + count
    }

    fn held_count(&self) -> u64 {
        if self.partial.is_empty() {
            self.count_of(&self.held)
        } else {
            // an incomplete UTF-8 sequence at the end decodes to one U+FFFD, part of the last piece
            self.count_of(&format!("{}\u{FFFD}", self.held))
        }
    }

    fn count_of(&self, text: &str) -> u64 {
        #[cfg(test)]
        self.work.fetch_add(text.len(), Ordering::Relaxed);
        self.enc.count(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_utf8_sequence_at_the_end_counts_as_one_replacement() {
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            let mut c = TextCounter::new(enc);
            c.push("naïve é".as_bytes());
            c.push(&"€".as_bytes()[..2]);
            assert_eq!(c.total(), enc.count("naïve é\u{FFFD}"));
        }
    }

    const TEXT: &str = "Hello, world! It's 2024: don't   stop…\n\n  naïve café 中文分词 😀👍🏽 12345 HELLOworld\r\n\tend  ";

    #[test]
    fn a_snapshot_per_piece_of_one_long_piece_stays_linear() {
        let enc = Encoding::O200k;
        // a run of punctuation, of letters (one pre-tokenizer piece each), then prose after it
        for unit in [".", "abcdefghijklmnopqrstuvwxyz", "a"] {
            let run = unit.repeat((256 << 10) / unit.len());
            let text = format!("{run} and then some words after it, as usual.");
            let mut c = TextCounter::new(enc);
            let mut last = 0;
            for piece in text.as_bytes().chunks(64) {
                c.push(piece);
                c.settle_now();
                let soon = c.total_soon();
                // never behind the count of the text so far, checked at a few places
                if c.held.len() % 8192 < 64 {
                    let so_far =
                        std::str::from_utf8(&text.as_bytes()[..last + piece.len()]).unwrap();
                    assert!(soon >= enc.count(so_far), "{unit:?} at {}", so_far.len());
                }
                last += piece.len();
            }
            assert_eq!(c.total(), enc.count(&text), "{unit:?}");
            // each byte is split and counted a few times, not once per snapshot (that was ~2,000 times)
            let work = c.work.load(Ordering::Relaxed);
            assert!(
                work < 8 * text.len(),
                "{unit:?}: {work} bytes of work for {}",
                text.len()
            );
        }
    }

    /// Lowercase letters from a fixed seed (a long piece BPE splits unevenly).
    fn letters(n: usize, mut seed: u64) -> String {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + ((seed >> 33) % 26) as u8) as char
            })
            .collect()
    }

    #[test]
    fn a_snapshot_is_never_below_the_count_of_the_text_so_far() {
        // a byte that adds more than one token: a space run's last space joins a digit after it, BPE
        // re-merges a long piece, a character cut across pieces counts one U+FFFD until it is whole
        let cjk = format!("{}\u{5d40}{}", "中".repeat(400), "\u{2040f}".repeat(50)).into_bytes();
        let cut: Vec<Vec<u8>> = cjk.chunks(7).map(<[u8]>::to_vec).collect();
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![b" ".repeat(1100), b"1".to_vec()],
            vec![b"\t".repeat(2000), b".".to_vec()],
            [
                vec![b" ".repeat(1107), b"1".to_vec()],
                vec![b".1".to_vec(); 300],
            ]
            .concat(),
            [
                vec![b"    ".repeat(400)],
                vec![b"1".to_vec(), b" x".to_vec()],
            ]
            .concat(),
            vec![
                format!("{}shhecuda", letters(1100, 7)).into_bytes(),
                b"j".to_vec(),
            ],
            letters(6000, 3)
                .into_bytes()
                .chunks(3)
                .map(<[u8]>::to_vec)
                .collect(),
            cut,
        ];
        for enc in [Encoding::O200k, Encoding::Cl100k] {
            for (i, pieces) in cases.iter().enumerate() {
                let mut c = TextCounter::new(enc);
                let mut so_far = Vec::new();
                for p in pieces {
                    c.push(p);
                    c.settle_now();
                    so_far.extend_from_slice(p);
                    let want = enc.count(&String::from_utf8_lossy(&so_far));
                    let soon = c.total_soon();
                    assert!(
                        soon >= want,
                        "case {i}, {enc:?}, {} bytes: {soon} < {want}",
                        so_far.len()
                    );
                }
                assert_eq!(
                    c.total(),
                    enc.count(&String::from_utf8_lossy(&so_far)),
                    "case {i}"
                );
            }
        }
    }

    #[test]
    fn incremental_equals_one_shot_for_every_split() {
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            let want = enc.count(TEXT);
            let bytes = TEXT.as_bytes();
            for step in 1..12 {
                let mut c = TextCounter::new(enc);
                for chunk in bytes.chunks(step) {
                    c.push(chunk);
                }
                assert_eq!(c.total(), want, "{enc:?} step {step}");
            }
        }
    }

    #[test]
    fn settling_at_any_time_stays_exact() {
        let text = TEXT.repeat(40);
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            for step in [1, 3, 7, 50] {
                let mut c = TextCounter::new(enc);
                for (i, chunk) in text.as_bytes().chunks(step).enumerate() {
                    c.push(chunk);
                    if i % 3 == 0 {
                        c.settle_now();
                        assert!(c.held.len() < 64, "held {}", c.held.len());
                    }
                }
                assert_eq!(c.total(), enc.count(&text), "{enc:?} step {step}");
            }
        }
    }

    #[test]
    fn long_text_settles_and_stays_exact() {
        let text = TEXT.repeat(500);
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            let mut c = TextCounter::new(enc);
            for chunk in text.as_bytes().chunks(7) {
                c.push(chunk);
            }
            assert!(c.held.len() < 2 * MIN_BATCH + 200, "held {}", c.held.len());
            assert_eq!(c.total(), enc.count(&text));
        }
    }

    /// The count of bpe-openai (its regex split, its BPE): the oracle.
    fn oracle(enc: Encoding, text: &str) -> u64 {
        enc.tokenizer().count(text) as u64
    }

    #[test]
    fn random_text_counts_as_the_oracle() {
        let mut rng = crate::pretokenize::tests::Rng(0xC0FF_EE00_1234_5678);
        for _ in 0..20_000 {
            let text = rng.text(30);
            for enc in [Encoding::Cl100k, Encoding::O200k] {
                assert_eq!(enc.count(&text), oracle(enc, &text), "{enc:?} {text:?}");
            }
        }
    }

    #[test]
    fn long_random_text_counts_as_the_oracle() {
        // long enough for the table of recent pieces, with repeats and near-repeats
        let mut rng = crate::pretokenize::tests::Rng(0xFACE_FEED_0BAD_CAFE);
        for _ in 0..40 {
            let parts: Vec<String> = (0..30).map(|_| rng.text(12)).collect();
            let text: String = (0..400)
                .map(|_| parts[rng.below(parts.len())].as_str())
                .collect();
            assert!(text.len() >= Recent::WORTH_IT);
            for enc in [Encoding::Cl100k, Encoding::O200k] {
                assert_eq!(enc.count(&text), oracle(enc, &text), "{enc:?} {text:?}");
            }
        }
    }

    #[test]
    fn long_runs_of_multibyte_characters_count_as_the_oracle() {
        // runs of CJK, kana, Hangul, Cyrillic, Greek, accented letters and emoji, and each vocabulary's own
        // multi-byte words (where tokens join characters): long pieces cut where no token can span
        let ranges = [
            (0x4E00, 0x9FFF),
            (0x3040, 0x30FF),
            (0xAC00, 0xD7A3),
            (0x0400, 0x04FF),
            (0x0370, 0x03FF),
            (0x00C0, 0x00FF),
            (0x1F300, 0x1F64F),
        ];
        let mut rng = crate::pretokenize::tests::Rng(0x5EED_C1C1_0000_0042);
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            let bpe = &enc.tokenizer().bpe;
            let words: Vec<String> = (0..bpe.num_tokens() as u32)
                .filter_map(|id| std::str::from_utf8(bpe.token_bytes(id)).ok())
                .filter(|w| w.chars().count() > 1 && w.chars().all(|c| c.len_utf8() > 1))
                .map(str::to_string)
                .collect();
            assert!(words.len() > 500, "{enc:?}: {} words", words.len());
            let (mut cut, vocab) = (0, enc.vocab());
            for _ in 0..60 {
                let mut text = String::new();
                while text.len() < 3 * Recent::WORTH_IT {
                    match rng.below(10) {
                        0..=4 => text.push_str(&words[rng.below(words.len())]),
                        5..=7 => {
                            let (lo, hi) = ranges[rng.below(ranges.len())];
                            text.extend(char::from_u32(lo + rng.below((hi - lo) as usize) as u32));
                        }
                        8 => text.push_str([" ", "，", "。", "\n", "a", "1"][rng.below(6)]),
                        _ => {
                            let back: String = text.chars().rev().take(20).collect();
                            text.push_str(&back); // a repeat, reversed
                        }
                    }
                }
                let chars: Vec<&str> = text.split_inclusive(|_| true).collect();
                for w in chars.windows(2) {
                    let (a, b) = (w[0].as_bytes(), w[1].as_bytes());
                    if a.len() > 1 && b.len() > 1 {
                        let joins = vocab.joinable(a, b);
                        assert_eq!(
                            joins,
                            joinable_every_way(vocab, a, b),
                            "{enc:?} {a:?} {b:?}"
                        );
                        cut += usize::from(!joins);
                    }
                }
                assert_eq!(enc.count(&text), oracle(enc, &text), "{enc:?} {text:?}");
            }
            assert!(cut > 10_000, "{enc:?}: only {cut} cuts");
        }
    }

    /// `Vocab::joinable` without its shortcut: a look-up for each pair of
    /// an end of `a` and a start of `b`.
    fn joinable_every_way(vocab: &Vocab, a: &[u8], b: &[u8]) -> bool {
        (1..=a.len())
            .any(|x| (1..=b.len()).any(|y| vocab.joins_at(join_key(&a[a.len() - x..], &b[..y]))))
    }

    #[test]
    fn cutting_stops_where_characters_join_and_resumes_where_they_do_not() {
        // o200k_base joins most Devanagari characters (a cut in about 1 boundary of 25) and few Chinese
        // ones (1 in 2): cutting stops in the first part of the text, resumes in the second, and the count
        // is the oracle's throughout
        let enc = Encoding::O200k;
        let (bpe, vocab) = (&enc.tokenizer().bpe, enc.vocab());
        let script = |lo: u32, hi: u32| -> Vec<String> {
            (0..bpe.num_tokens() as u32)
                .filter_map(|id| std::str::from_utf8(bpe.token_bytes(id)).ok())
                .filter(|w| {
                    w.chars().count() > 1 && w.chars().all(|c| (lo..=hi).contains(&(c as u32)))
                })
                .map(str::to_string)
                .collect()
        };
        let (hindi, chinese) = (script(0x0900, 0x097F), script(0x4E00, 0x9FFF));
        assert!(
            hindi.len() > 500 && chinese.len() > 500,
            "{} {}",
            hindi.len(),
            chinese.len()
        );
        let mut rng = crate::pretokenize::tests::Rng(0x0DE7_A0A6_0000_0019);
        let mut part = |words: &[String]| {
            let mut text = String::new();
            while text.len() < 64 << 10 {
                for _ in 0..6 {
                    text.push_str(&words[rng.below(words.len())]);
                }
                text.push(' ');
            }
            text
        };
        let (first, second) = (part(&hindi), part(&chinese));
        let mut recent = Recent::new(first.len() + second.len());
        let mut total = 0;
        // the long pieces with a boundary to check, and those counted uncut (no boundary checked)
        let mut count = |text: &str| {
            let (mut long, mut uncut) = (0, 0);
            for piece in enc.split(text) {
                let before = recent.checked;
                total += recent.count(vocab, piece);
                let pairs = piece.chars().zip(piece.chars().skip(1));
                if piece.len() > Recent::MAX_LEN
                    && !vocab.is_token(piece.as_bytes())
                    && pairs
                        .clone()
                        .any(|(a, b)| a.len_utf8() > 1 && b.len_utf8() > 1)
                {
                    long += 1;
                    uncut += usize::from(recent.checked == before);
                }
            }
            (long, uncut)
        };
        // cutting stops after the first pieces, and is tried again now and then
        let (long, uncut) = count(&first);
        assert!(
            long > 1000 && uncut * 10 > long * 9 && uncut < long,
            "{uncut} of {long}"
        );
        // ... and resumes
        let (long, uncut) = count(&second);
        assert!(long > 1000 && uncut * 10 < long, "{uncut} of {long}");
        let text = first + &second;
        assert_eq!(total, oracle(enc, &text));
        assert_eq!(enc.count(&text), oracle(enc, &text));
    }

    #[test]
    fn short_keys_differ_for_different_strings_of_one_length() {
        let mut rng = crate::pretokenize::tests::Rng(0x1234_5678_9ABC_DEF0);
        for _ in 0..200_000 {
            let n = 1 + rng.below(16);
            let a: Vec<u8> = (0..n).map(|_| b"ab\0"[rng.below(3)]).collect();
            let b: Vec<u8> = (0..n).map(|_| b"ab\0"[rng.below(3)]).collect();
            assert_eq!(short_key(&a) == short_key(&b), a == b, "{a:?} {b:?}");
        }
    }

    #[test]
    fn random_text_in_random_chunks_counts_as_the_whole() {
        // appending text changes only the last two pieces: settling at any point stays exact
        let mut rng = crate::pretokenize::tests::Rng(0x0123_4567_89AB_CDEF);
        for _ in 0..3_000 {
            let text = rng.text(60);
            let bytes = text.as_bytes();
            for enc in [Encoding::Cl100k, Encoding::O200k] {
                let mut c = TextCounter::new(enc);
                let mut pos = 0;
                while pos < bytes.len() {
                    let n = (1 + rng.below(8)).min(bytes.len() - pos);
                    c.push(&bytes[pos..pos + n]);
                    pos += n;
                    if rng.below(2) == 0 {
                        c.settle_now();
                    }
                }
                assert_eq!(c.total(), oracle(enc, &text), "{enc:?} {text:?}");
            }
        }
    }

    #[test]
    fn every_token_counts_one() {
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            let vocab = enc.vocab();
            for id in 0..vocab.bpe.num_tokens() as u32 {
                assert!(vocab.is_token(vocab.bpe.token_bytes(id)), "{enc:?} {id}");
            }
            assert!(!vocab.is_token(b"not a token at all, surely"));
        }
    }

    #[test]
    fn model_mapping_as_tiktoken() {
        let cases = [
            ("gpt-4o-mini", Some(Encoding::O200k)),
            ("gpt-4o", Some(Encoding::O200k)),
            ("gpt-4.1-nano", Some(Encoding::O200k)),
            ("gpt-5-mini", Some(Encoding::O200k)),
            ("o3-mini", Some(Encoding::O200k)),
            ("gpt-4-turbo", Some(Encoding::Cl100k)),
            ("gpt-3.5-turbo", Some(Encoding::Cl100k)),
            ("gpt-35-turbo-16k", Some(Encoding::Cl100k)),
            ("text-embedding-3-small", Some(Encoding::Cl100k)),
            ("claude-sonnet-4-5", None),
            ("gemini-2.5-flash", None),
        ];
        for (m, e) in cases {
            assert_eq!(encoding_for_model(m), e, "{m}");
        }
    }
}
