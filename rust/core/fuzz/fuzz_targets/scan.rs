//! Any bytes, any provider, content type and encoding: the scanner never
//! panics, and feeding the body whole or in pieces gives the same usage and
//! stats. Corrupt compressed data is the exception: a decoder that fails
//! drops output it had not flushed yet, and how much that is depends on
//! where the input was cut (found by this target: see
//! rust/core/tests/fuzz_regressions.rs); there only "no panic" holds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmtally_core::{ResponseMeta, ResponseScanner};

#[path = "split.rs"]
mod split;

/// Every registry id, `auto` and an unknown id.
fn provider(i: u8) -> &'static str {
    let ids = llmtally_core::PROVIDERS;
    match i as usize % (ids.len() + 2) {
        n if n < ids.len() => ids[n].id,
        n if n == ids.len() => "auto",
        _ => "x",
    }
}
const PATHS: [&str; 4] = ["", "/v1/chat/completions", "/v1/messages", "/v1beta/models/m:streamGenerateContent"];
const TYPES: [&str; 6] = ["", "text/event-stream", "application/json", "application/x-ndjson",
                          "application/vnd.amazon.eventstream", "text/plain"];
const ENCODINGS: [&str; 6] = ["", "gzip", "deflate", "br", "zstd", "gzip, br"];

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let (head, rest) = input.split_at(4);
    let cut_len = (head[3] as usize) % (rest.len() + 1);
    let (cuts, body) = rest.split_at(cut_len.min(rest.len()));
    let meta = ResponseMeta {
        content_type: TYPES[head[1] as usize % TYPES.len()].into(),
        content_encoding: ENCODINGS[head[2] as usize % ENCODINGS.len()].into(),
        max_decoded_bytes: 1 << 20,
        max_event_bytes: 4096,
        path: PATHS[(head[0] >> 4) as usize % PATHS.len()].into(),
        ..ResponseMeta::default()
    };
    let provider = provider(head[0]);
    let mut whole = ResponseScanner::new(provider, None, &meta);
    whole.feed(body);
    let mut parts = ResponseScanner::new(provider, None, &meta);
    for p in split::pieces(body, cuts) {
        parts.feed(p);
    }
    if whole.stats().decode_failed || parts.stats().decode_failed {
        whole.finish();
        parts.finish();
        return;
    }
    assert_eq!(whole.snapshot(), parts.snapshot());
    assert_eq!(whole.finish(), parts.finish());
    assert_eq!(whole.stats(), parts.stats());
});
