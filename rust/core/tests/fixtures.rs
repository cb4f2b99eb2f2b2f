//! The shared fixture manifest (tests/fixtures/cases.json), checked on the
//! Rust core directly: whole, byte by byte, and split at every position.

use llmtally_core::{parse_request, ResponseMeta, ResponseScanner, Usage};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn usage_json(u: &Usage) -> Value {
    serde_json::json!({
        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens, "cached_tokens": u.cached_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens, "model": u.model, "provider_model": u.provider_model,
        "streaming": u.streaming, "source": u.source.as_str(),
        "response_id": u.response_id, "finish_reasons": u.finish_reasons,
    })
}

fn scan(case: &Value, pieces: &[&[u8]]) -> Value {
    let s = |k: &str| {
        case.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let provider = s("provider");
    let request = case.get("request").and_then(Value::as_str).map(|r| {
        parse_request(
            &std::fs::read(fixtures().join(r)).unwrap(),
            &provider,
            &s("path"),
        )
    });
    let headers = case
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let meta = ResponseMeta {
        content_type: s("content_type"),
        path: s("path"),
        headers,
        ..ResponseMeta::default()
    };
    let mut sc = ResponseScanner::new(&provider, request, &meta);
    for p in pieces {
        sc.feed(p);
    }
    usage_json(&sc.finish())
}

#[test]
fn every_case_under_every_split() {
    let cases: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 34);
    for case in &cases {
        let body = std::fs::read(fixtures().join(case["response"].as_str().unwrap())).unwrap();
        let want = &case["usage"];
        let name = case["name"].as_str().unwrap();
        assert_eq!(&scan(case, &[&body]), want, "{name}: whole");
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(&scan(case, &bytes), want, "{name}: byte by byte");
        for i in 0..=body.len() {
            assert_eq!(
                &scan(case, &[&body[..i], &body[i..]]),
                want,
                "{name}: split at {i}"
            );
        }
        if case.get("binary").is_none() {
            let crlf = String::from_utf8(body.clone())
                .unwrap()
                .replace('\n', "\r\n")
                .into_bytes();
            let bytes: Vec<&[u8]> = crlf.chunks(1).collect();
            assert_eq!(&scan(case, &bytes), want, "{name}: CRLF byte by byte");
        }
    }
}
