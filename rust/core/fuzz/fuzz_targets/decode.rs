//! Decoders on arbitrary input: no panic, output never past the cap, and for
//! input that decodes cleanly, the same output under any split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmtally_core::{parse_content_encoding as parse, Decoder};

#[path = "split.rs"]
mod split;

const CODINGS: [&str; 5] = ["gzip", "deflate", "br", "zstd", "deflate, gzip"];

fn run(codecs: &str, pieces: &[&[u8]]) -> (Vec<u8>, bool, bool) {
    let mut d = Decoder::new(&parse(codecs).unwrap(), 1 << 16);
    let mut out = Vec::new();
    for p in pieces {
        d.push(p, &mut |b| out.extend_from_slice(b));
    }
    assert!(out.len() <= 1 << 16);
    (out, d.stopped, d.failed)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let codecs = CODINGS[input[0] as usize % CODINGS.len()];
    let n = input[1] as usize % (input.len() - 1);
    let (cuts, body) = input[2..].split_at(n.min(input.len() - 2));
    let whole = run(codecs, &[body]);
    let parts = run(codecs, &split::pieces(body, cuts));
    if !whole.2 && !parts.2 {
        assert_eq!(whole, parts);
    }
});
