//! Writes the pre-tokenizer's Unicode classes for the pure-Python fallback:
//! `cargo run --release --example unicode_classes > python/llmtally/fallback/unicode_classes.txt`
//! (`cargo test` fails while the file is not what this prints).

fn main() {
    print!("{}", llmtally_core::unicode_classes_text());
}
