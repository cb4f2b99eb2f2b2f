//! Incremental counting equals one-shot counting of the (lossily decoded)
//! text, whatever the pieces (inside words, inside UTF-8 sequences).
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmtally_core::{Encoding, TextCounter};

#[path = "split.rs"]
mod split;

fuzz_target!(|input: &[u8]| {
    if input.is_empty() {
        return;
    }
    let enc = if input[0] & 1 == 0 { Encoding::O200k } else { Encoding::Cl100k };
    let n = (input[0] as usize >> 1) % input.len();
    let (cuts, text) = input[1..].split_at(n.min(input.len() - 1));
    let mut c = TextCounter::new(enc);
    for p in split::pieces(text, cuts) {
        c.push(p);
    }
    assert_eq!(c.total(), enc.count(&String::from_utf8_lossy(text)));
});
