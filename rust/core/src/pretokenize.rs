//! Hand-written pre-tokenizers for cl100k_base and o200k_base: the split
//! that tiktoken does with its regex, without a regex engine.
//!
//! Each split takes, at the current position, the first alternative of the
//! pattern that matches (leftmost-first, as a backtracking engine does), and
//! goes on after it. The Unicode classes are those of `regex-syntax`, the
//! crate whose tables the regex engines use; they are read once into a
//! per-code-point table of class bits.
//!
//! cl100k_base (tiktoken's pattern; `\s++$` and `\s*[\r\n]` in a different
//! order than `\s*[\r\n]+|\s+$` here, which splits a trailing
//! newline-then-blanks run in two, with the same count):
//!
//! ```text
//! '(?i:[sdmt]|ll|ve|re) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3}
//! | ?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+$ | \s+(?!\S) | \s+
//! ```
//!
//! o200k_base:
//!
//! ```text
//! [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! | [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! | \p{N}{1,3} | ?[^\s\p{L}\p{N}]+[\r\n/]* | \s*[\r\n]+ | \s+(?!\S) | \s+
//! ```

use std::sync::LazyLock;

/// `\p{L}`
const LETTER: u8 = 1;
/// `\p{N}`
const NUMBER: u8 = 2;
/// `\s` (Unicode White_Space)
const SPACE: u8 = 4;
/// `[\r\n]`
const NEWLINE: u8 = 8;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, o200k's "upper" letters
const UPPER: u8 = 16;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`, o200k's "lower" letters
const LOWER: u8 = 32;
/// `[^\s\p{L}\p{N}]`, punctuation and symbols
const PUNCT: u8 = 64;
/// `[^\r\n\p{L}\p{N}]`, the optional character before a word
const PREFIX: u8 = 128;

/// Class bits for every code point: a table per block of 256 code points,
/// identical blocks shared.
struct Classes {
    ascii: [u8; 128],
    index: Vec<u16>,
    blocks: Vec<u8>,
}

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let hir = regex_syntax::parse(pattern).expect("valid class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("{pattern} is not a Unicode class: {other:?}"),
    }
}

const CODE_POINTS: usize = 0x110000;

/// The class bits of every code point, from `regex-syntax`'s tables.
fn flat_classes() -> Vec<u8> {
    let mut flat = vec![0u8; CODE_POINTS];
    let classes: [(&str, u8); 8] = [
        (r"\p{L}", LETTER),
        (r"\p{N}", NUMBER),
        (r"\s", SPACE),
        (r"[\r\n]", NEWLINE),
        (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UPPER),
        (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LOWER),
        (r"[^\s\p{L}\p{N}]", PUNCT),
        (r"[^\r\n\p{L}\p{N}]", PREFIX),
    ];
    for (pattern, bit) in classes {
        for (lo, hi) in class_ranges(pattern) {
            for b in &mut flat[lo as usize..=hi as usize] {
                *b |= bit;
            }
        }
    }
    flat
}

/// The pre-tokenizer's view of Unicode, for the pure-Python fallback (whose `regex` module may have a newer
/// Unicode than tiktoken's and ours: it pins its splits to this): every run of code points past ASCII with
/// the same class bits, as (first, last, bits); code points in no run have none.
pub fn class_runs() -> Vec<(u32, u32, u8)> {
    let flat = flat_classes();
    let mut runs: Vec<(u32, u32, u8)> = Vec::new();
    for (cp, &bits) in flat.iter().enumerate().skip(128) {
        match runs.last_mut() {
            Some((_, last, b)) if *b == bits && *last + 1 == cp as u32 => *last = cp as u32,
            _ if bits != 0 => runs.push((cp as u32, cp as u32, bits)),
            _ => {}
        }
    }
    runs
}

/// `class_runs` as the fallback reads it: a header line, then one line per run, `first last bits` in hex.
pub fn unicode_classes_text() -> String {
    let mut out = String::from(
        "# the pre-tokenizer's Unicode classes (regex-syntax's tables): first last bits, hex; written by\n\
         # `cargo run --release --example unicode_classes`, checked by `cargo test`\n",
    );
    for (lo, hi, bits) in class_runs() {
        out.push_str(&format!("{lo:x} {hi:x} {bits:x}\n"));
    }
    out
}

static CLASSES: LazyLock<Classes> = LazyLock::new(|| {
    let flat = flat_classes();
    let mut index = Vec::with_capacity(CODE_POINTS >> 8);
    let mut blocks: Vec<u8> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for block in flat.chunks(256) {
        let n = *seen.entry(block).or_insert_with(|| {
            blocks.extend_from_slice(block);
            (blocks.len() / 256 - 1) as u16
        });
        index.push(n);
    }
    let mut ascii = [0u8; 128];
    ascii.copy_from_slice(&flat[..128]);
    Classes {
        ascii,
        index,
        blocks,
    }
});

impl Classes {
    /// Class bits and byte length of the character at `i`; (0, 0) at the end.
    #[inline(always)]
    fn at(&self, text: &[u8], i: usize) -> (u8, usize) {
        let Some(&b0) = text.get(i) else {
            return (0, 0);
        };
        if b0 < 0x80 {
            return (self.ascii[b0 as usize], 1);
        }
        // `text` is valid UTF-8: decode without checks beyond the slice bounds
        let cont = |k: usize| (text[i + k] & 0x3F) as u32;
        let (cp, len) = if b0 < 0xE0 {
            (((b0 & 0x1F) as u32) << 6 | cont(1), 2)
        } else if b0 < 0xF0 {
            (((b0 & 0x0F) as u32) << 12 | cont(1) << 6 | cont(2), 3)
        } else {
            (
                ((b0 & 0x07) as u32) << 18 | cont(1) << 12 | cont(2) << 6 | cont(3),
                4,
            )
        };
        let block = self.index[(cp >> 8) as usize] as usize;
        (self.blocks[block << 8 | (cp & 0xFF) as usize], len)
    }

    /// End of the run of characters with any of `bits`, from `i`.
    #[inline(always)]
    fn run(&self, text: &[u8], mut i: usize, bits: u8) -> usize {
        loop {
            let (c, n) = self.at(text, i);
            if c & bits == 0 {
                return i;
            }
            i += n;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Cl100k,
    O200k,
}

/// The pieces of `text`, as the encoding's regex splits it.
pub fn split(pattern: Pattern, text: &str) -> Pieces<'_> {
    Pieces {
        classes: &CLASSES,
        pattern,
        text,
        pos: 0,
    }
}

pub struct Pieces<'a> {
    classes: &'static Classes,
    pattern: Pattern,
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if start >= self.text.len() {
            return None;
        }
        let bytes = self.text.as_bytes();
        let end = match self.pattern {
            Pattern::Cl100k => cl100k_piece(self.classes, bytes, start),
            Pattern::O200k => o200k_piece(self.classes, bytes, start),
        };
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// `'(?i:s|t|re|ve|m|ll|d)` at `i`: its end. Under case folding `s` also
/// matches U+017F (ſ); the other letters fold only to their ASCII pair.
#[inline]
fn contraction(text: &[u8], i: usize) -> Option<usize> {
    if text.get(i) != Some(&b'\'') {
        return None;
    }
    let lower = |k: usize| text.get(i + k).map(|b| b.to_ascii_lowercase());
    match lower(1)? {
        b's' | b't' | b'm' | b'd' => Some(i + 2),
        0xC5 if text.get(i + 2) == Some(&0xBF) => Some(i + 3), // ſ
        b'r' | b'v' if lower(2) == Some(b'e') => Some(i + 3),
        b'l' if lower(2) == Some(b'l') => Some(i + 3),
        _ => None,
    }
}

/// The whitespace alternatives, shared by both encodings, at `i` (a `\s`):
/// `\s*[\r\n]+`, then `\s+$`, then `\s+(?!\S)`, then `\s+` (which can only
/// be one character here, as a longer run matches the look-ahead branch).
fn whitespace(c: &Classes, text: &[u8], i: usize) -> usize {
    let mut pos = i;
    let mut after_newline = None; // end of the run's last [\r\n]
    let mut last_start = i; // start of the run's last character
    loop {
        let (class, n) = c.at(text, pos);
        if class & SPACE == 0 {
            break;
        }
        if class & NEWLINE != 0 {
            after_newline = Some(pos + n);
        }
        last_start = pos;
        pos += n;
    }
    if let Some(end) = after_newline {
        // \s*[\r\n]+ : up to the last newline of the run
        end
    } else if pos == text.len() {
        // \s+$
        pos
    } else if last_start > i {
        // \s+(?!\S) : all but the last blank, which goes with what follows
        last_start
    } else {
        // \s+ (one character)
        pos
    }
}

fn cl100k_piece(c: &Classes, text: &[u8], i: usize) -> usize {
    // '(?i:[sdmt]|ll|ve|re)
    if let Some(end) = contraction(text, i) {
        return end;
    }
    let (c0, n0) = c.at(text, i);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if c0 & LETTER != 0 {
        return c.run(text, i, LETTER);
    }
    if c0 & PREFIX != 0 && c.at(text, i + n0).0 & LETTER != 0 {
        return c.run(text, i + n0, LETTER);
    }
    // \p{N}{1,3}
    if c0 & NUMBER != 0 {
        return digits(c, text, i);
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    if let Some(end) = punctuation(c, text, i, b"\r\n") {
        return end;
    }
    whitespace(c, text, i)
}

/// `\p{N}{1,3}` at `i` (a number).
fn digits(c: &Classes, text: &[u8], i: usize) -> usize {
    let mut pos = i;
    for _ in 0..3 {
        let (class, n) = c.at(text, pos);
        if class & NUMBER == 0 {
            break;
        }
        pos += n;
    }
    pos
}

/// ` ?[^\s\p{L}\p{N}]+` then any of the bytes `trailing` (ASCII), at `i`.
fn punctuation(c: &Classes, text: &[u8], i: usize, trailing: &[u8]) -> Option<usize> {
    let from = if text[i] == b' ' { i + 1 } else { i };
    if c.at(text, from).0 & PUNCT == 0 {
        return None;
    }
    let mut pos = c.run(text, from, PUNCT);
    while text.get(pos).is_some_and(|b| trailing.contains(b)) {
        pos += 1;
    }
    Some(pos)
}

fn o200k_piece(c: &Classes, text: &[u8], i: usize) -> usize {
    if let Some(end) = o200k_ascii_word(text, i) {
        return end;
    }
    let (c0, n0) = c.at(text, i);
    // a word: each branch first with the optional [^\r\n\p{L}\p{N}] before it, then without
    let prefixed = (c0 & PREFIX != 0).then_some(i + n0);
    if let Some(end) = prefixed
        .and_then(|s| upper_then_lower(c, text, s))
        .or_else(|| upper_then_lower(c, text, i))
        .or_else(|| prefixed.and_then(|s| upper_run(c, text, s)))
        .or_else(|| upper_run(c, text, i))
    {
        return end;
    }
    // \p{N}{1,3}
    if c0 & NUMBER != 0 {
        return digits(c, text, i);
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n/]*'
    if let Some(end) = punctuation(c, text, i, b"\r\n/") {
        return end;
    }
    whitespace(c, text, i)
}

/// The word branches for a word of ASCII letters, most words of English and
/// code: `[A-Z]*[a-z]*` (at least one letter), after an optional ASCII
/// `[^\r\n\p{L}\p{N}]`, then the contraction. In ASCII the first branch
/// matches when a lower-case letter follows the capitals, else the second
/// takes the capitals (an ASCII prefix is neither UPPER nor LOWER, so trying
/// it as the word's first letter fails): both end after the letters. None
/// when the word is not that, or when a non-ASCII character follows (which
/// may be a letter or mark of the word): the general branches decide.
#[inline(always)]
fn o200k_ascii_word(text: &[u8], i: usize) -> Option<usize> {
    let b0 = *text.get(i)?;
    let s = if b0.is_ascii_alphabetic() {
        i
    } else if b0.is_ascii() && !b0.is_ascii_digit() && b0 != b'\r' && b0 != b'\n' {
        i + 1
    } else {
        return None;
    };
    let mut pos = s;
    while text.get(pos).is_some_and(u8::is_ascii_uppercase) {
        pos += 1;
    }
    while text.get(pos).is_some_and(u8::is_ascii_lowercase) {
        pos += 1;
    }
    if pos == s || text.get(pos).is_some_and(|b| !b.is_ascii()) {
        return None;
    }
    Some(contraction(text, pos).unwrap_or(pos))
}

/// `[UPPER]*[LOWER]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `s`, as a backtracking
/// engine matches it: the longest run of UPPER that a LOWER follows (the two
/// classes share Lm, Lo and M, so the LOWER may be the run's own last
/// character), then LOWER as far as it goes.
fn upper_then_lower(c: &Classes, text: &[u8], s: usize) -> Option<usize> {
    let mut pos = s;
    let mut last_lower = None; // (start, end) of the last LOWER inside the UPPER run
    loop {
        let (class, n) = c.at(text, pos);
        if class & UPPER == 0 {
            break;
        }
        if class & LOWER != 0 {
            last_lower = Some((pos, pos + n));
        }
        pos += n;
    }
    let end = if c.at(text, pos).0 & LOWER != 0 {
        // the whole UPPER run, then [LOWER]+ after it
        c.run(text, pos, LOWER)
    } else {
        // [UPPER]* gives back up to the run's last LOWER, which [LOWER]+ takes alone
        // (the characters after it in the run are not LOWER)
        let (_, after) = last_lower?;
        after
    };
    Some(contraction(text, end).unwrap_or(end))
}

/// `[UPPER]+[LOWER]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `s`.
fn upper_run(c: &Classes, text: &[u8], s: usize) -> Option<usize> {
    if c.at(text, s).0 & UPPER == 0 {
        return None;
    }
    let end = c.run(text, c.run(text, s, UPPER), LOWER);
    Some(contraction(text, end).unwrap_or(end))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_fallbacks_class_file_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../python/llmtally/fallback/unicode_classes.txt"
        );
        let file = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            file == unicode_classes_text(),
            "{path} is not regex-syntax's: run `cargo run --release --example unicode_classes > {path}`"
        );
    }

    /// The regex split of the bpe-openai crate (checked there against tiktoken): the oracle.
    fn oracle(pattern: Pattern, text: &str) -> Vec<&str> {
        let tok = match pattern {
            Pattern::Cl100k => bpe_openai::cl100k_base(),
            Pattern::O200k => bpe_openai::o200k_base(),
        };
        tok.split(text).collect()
    }

    fn check(text: &str) {
        for pattern in [Pattern::Cl100k, Pattern::O200k] {
            let got: Vec<&str> = split(pattern, text).collect();
            assert_eq!(got, oracle(pattern, text), "{pattern:?} {text:?}");
        }
    }

    /// Pieces of tricky text: scripts and cases, combining marks, digits of
    /// several kinds, apostrophes and contractions, Unicode spaces and
    /// newlines, punctuation, emoji, CJK.
    pub(crate) const ALPHABET: &[&str] = &[
        "a",
        "b",
        "z",
        "Z",
        "HELLO",
        "Hello",
        "hELLO",
        "é",
        "e\u{301}",
        "\u{301}",
        "\u{301}\u{301}",
        "ß",
        "ſ",
        "\u{212A}",
        "İ",
        "ǅ",
        "ʰ",
        "ª",
        "中",
        "文",
        "日本",
        "カ",
        "ー",
        "々",
        "한",
        "ㄱ",
        "Ω",
        "Ж",
        "ж",
        "ا",
        "א",
        "ก",
        "\u{e33}",
        "\u{903}",
        "\u{20dd}",
        "\u{1d400}",
        "\u{1d41a}",
        "0",
        "1",
        "9",
        "123",
        "٣",
        "Ⅻ",
        "½",
        "²",
        "'",
        "'s",
        "'S",
        "'ſ",
        "'ll",
        "'LL",
        "'lL",
        "'Re",
        "'ve",
        "'VE",
        "'m",
        "'M",
        "'d",
        "'D",
        "'t",
        "'T",
        "'x",
        "''",
        "’s",
        " ",
        "  ",
        "   ",
        "\t",
        "\t\t",
        "\n",
        "\n\n",
        "\r\n",
        "\r",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "\u{2029}",
        "\u{85}",
        "\u{b}",
        "\u{c}",
        "\u{1680}",
        "\u{200b}",
        ".",
        ",",
        "/",
        "//",
        "!",
        "?",
        "-",
        "_",
        "(",
        ")",
        "{",
        "}",
        "\"",
        "#",
        "$",
        "€",
        "😀",
        "👍🏽",
        "\u{200d}",
        "\u{fe0f}",
        "\u{ffff}",
        "\u{10ffff}",
        "\u{e000}",
        "\u{1f1fa}\u{1f1f8}",
        "\u{0}",
        "\u{7f}",
        "\u{ad}",
        "\u{2160}",
    ];

    /// xorshift64*: deterministic random numbers for the property tests.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// A string of up to `max` pieces, mostly from a small random sub-alphabet
        /// (so that runs and repeats happen), sometimes any code point.
        pub(crate) fn text(&mut self, max: usize) -> String {
            let sub: Vec<&str> = (0..1 + self.below(6))
                .map(|_| ALPHABET[self.below(ALPHABET.len())])
                .collect();
            let mut s = String::new();
            for _ in 0..self.below(max + 1) {
                match self.below(20) {
                    0 => s.push_str(ALPHABET[self.below(ALPHABET.len())]),
                    1 => s.extend(char::from_u32(self.below(0x110000) as u32)),
                    _ => s.push_str(sub[self.below(sub.len())]),
                }
            }
            s
        }
    }

    #[test]
    fn random_text_splits_as_the_regex() {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        for _ in 0..30_000 {
            check(&rng.text(24));
        }
    }

    #[test]
    fn every_alphabet_pair_and_triple_splits_as_the_regex() {
        for a in ALPHABET {
            for b in ALPHABET {
                check(&format!("{a}{b}"));
                for c in ["a", " ", "\n", "'", "1", "\u{301}", "A"] {
                    check(&format!("{a}{b}{c}"));
                    check(&format!("{c}{a}{b}"));
                }
            }
        }
    }

    #[test]
    fn every_code_point_splits_as_the_regex() {
        // each code point alone, before and after letters of both cases, a space, a digit, an apostrophe
        let all: Vec<char> = (0..0x110000u32).filter_map(char::from_u32).collect();
        for chunk in all.chunks(4096) {
            let mut text = String::new();
            for &c in chunk {
                text.extend([c, 'a', c, 'A', c, ' ', c, '1', c, '\'', c, c, '\n']);
            }
            check(&text);
        }
    }

    #[test]
    fn contraction_letters_fold_only_to_ascii_and_long_s() {
        // (?i:s) also matches U+017F; the other contraction letters have only their ASCII pair
        let ranges = class_ranges("(?i:[sdmtrevl])");
        let chars: String = ranges
            .iter()
            .flat_map(|&(lo, hi)| (lo..=hi).filter_map(char::from_u32))
            .collect();
        assert_eq!(chars, "DELMRSTVdelmrstvſ");
    }

    #[test]
    fn edge_cases() {
        for text in [
            "",
            "x\n    ",
            "a \n ",
            "  hello",
            "\t\tworld",
            "don't",
            "DON'T",
            "you'LL",
            "ſ'ſ",
            "'ſ",
            "\u{301}'s",
            "HELLOworld",
            "ʰʰA",
            "a//\n/b",
            " ?!\r\n\r\nx",
            "1234567",
            "\u{3000}\u{3000}x",
            "x\r\n",
        ] {
            check(text);
        }
    }
}
