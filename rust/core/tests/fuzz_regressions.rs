//! Inputs found by the fuzz targets (rust/core/fuzz), kept as regression tests.

use llmtally_core::{ResponseMeta, ResponseScanner};
use std::path::PathBuf;

fn input(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz-regressions")
            .join(name),
    )
    .unwrap()
}

/// `scan`: junk declared as brotli (provider mistral, SSE). Fed whole, the
/// decoder fails before flushing anything; fed in the fuzzer's pieces, it
/// flushed a few bytes first, which decided the framing. Both must fail
/// cleanly and report it; neither may panic.
#[test]
fn corrupt_brotli_fails_cleanly_under_any_split() {
    let data = input("scan-corrupt-brotli");
    let (_head, body) = data.split_at(4);
    let meta = ResponseMeta {
        content_type: "text/event-stream".into(),
        content_encoding: "br".into(),
        ..ResponseMeta::default()
    };
    for step in [1, 2, 3, 7, body.len()] {
        let mut sc = ResponseScanner::new("mistral", None, &meta);
        for c in body.chunks(step) {
            sc.feed(c);
        }
        let u = sc.finish();
        assert_eq!(
            (u.total_tokens, u.source.as_str()),
            (0, "none"),
            "step {step}"
        );
        assert!(sc.stats().decode_failed, "step {step}");
    }
}
