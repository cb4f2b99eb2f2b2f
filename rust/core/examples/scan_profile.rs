//! Throughput of the core on a ~1000-delta OpenAI stream, fed in 16 KiB chunks:
//! `cargo run --release --example scan_profile`. Another stream: `BODY=file PROVIDER=anthropic
//! TOTAL=40` (the total tokens it reports), e.g. one of benches/workloads.py's bodies written out.
use llmtally_core::{ResponseMeta, ResponseScanner};
use std::time::Instant;

fn main() {
    // the deltas in turn, as benches/workloads.py has them: words, punctuation, now and then a line break
    let words: [&[u8]; 20] = [
        b" The", b" quick", b" brown", b" fox", b" jumps", b" over", b" the", b" lazy", b" dog",
        b".", b" It", b" was", b" not", b" amused", b",", b" and", b" said", b" so", br"\n\n",
        b" Then",
    ];
    let head = |w: &[u8]| {
        let mut e = br#"data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":""#.to_vec();
        e.extend_from_slice(w);
        e.extend_from_slice(
            br#""},"logprobs":null,"finish_reason":null}],"usage":null}

"#,
        );
        e
    };
    // as OpenAI ends a stream with include_usage: the finish reason's chunk, then the usage's
    let tail = br#"data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":1000,"total_tokens":1021}}

data: [DONE]

"#;
    let mut body: Vec<u8> = (0..1000)
        .flat_map(|i| head(words[i % words.len()]))
        .collect();
    body.extend_from_slice(tail);
    let (mut provider, mut total) = ("openai".to_string(), 1021);
    if let Ok(path) = std::env::var("BODY") {
        body = std::fs::read(path).expect("BODY: a readable file");
        provider = std::env::var("PROVIDER").unwrap_or(provider);
        total = std::env::var("TOTAL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(total);
    }
    let meta = ResponseMeta {
        content_type: "text/event-stream".into(),
        ..ResponseMeta::default()
    };
    let mut best = f64::MAX;
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for _ in 0..runs {
        let t = Instant::now();
        let mut sc = ResponseScanner::new(&provider, None, &meta);
        for c in body.chunks(16 * 1024) {
            sc.feed(c);
        }
        let u = sc.finish();
        assert_eq!(u.total_tokens, total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{} bytes, best {:.1} us, {:.0} MB/s",
        body.len(),
        best * 1e6,
        body.len() as f64 / best / 1e6
    );
}
