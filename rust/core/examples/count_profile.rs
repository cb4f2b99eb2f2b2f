//! Throughput of `count_tokens` on one text: `cargo run --release --example count_profile -- FILE
//! [o200k_base|cl100k_base]` (best of 20 calls, in MB/s), for a profiler or a quick check.
use llmtally_core::Encoding;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: count_profile FILE [ENCODING]");
    let name = args.next().unwrap_or_else(|| "o200k_base".to_string());
    let enc = Encoding::from_name(&name).expect("an encoding: o200k_base or cl100k_base");
    let text = std::fs::read_to_string(&path).expect("a readable UTF-8 file");
    let tokens = enc.count(&text); // also loads the vocabulary
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(enc.count(&text), tokens);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{name}: {} bytes, {tokens} tokens, {:.0} MB/s",
        text.len(),
        text.len() as f64 / best / 1e6
    );
}
