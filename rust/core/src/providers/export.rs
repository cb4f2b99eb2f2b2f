//! The registry as JSON: the data the pure-Python fallback is built from
//! (`python/llmtally/fallback/registry.json`, generated, never edited by
//! hand). A test fails when the committed file differs from this output.

use super::ALL;
use crate::decode::DEFAULT_MAX_DECODED_BYTES;
use crate::decode::{BLOCK, ZSTD_WINDOW_LOG_MAX};
use crate::descriptor::{Cond, Descriptor, Framing, ModelEnd, CONTENT_TYPES, SNIFF_MAX};
use crate::eventstream::DEFAULT_MAX_EVENT_BYTES;
use crate::eventstream::{MIN_MESSAGE, PRELUDE};
use crate::field::{self, SLOTS};
use crate::json::{Pat, BARE_MAX, KEY_MAX};
use crate::text::{LAZY_BYTES, MAX_TEXTS};
use crate::tokens::{
    default_encoding, Encoding, ENCODINGS, LONG_HELD, LONG_SLACK, MAX_HELD, MIN_BATCH, MODELS,
    PREFIXES,
};
use crate::usage::{FINISH_REASONS_MAX, FINISH_REASON_MAX, MODEL_MAX, RESPONSE_ID_MAX};
use std::fmt::Write;

fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn pat(out: &mut String, p: &Pat) {
    match p {
        Pat::Leaf(f) => {
            let _ = write!(out, "{{\"leaf\":{f}}}");
        }
        Pat::Raw(f) => {
            let _ = write!(out, "{{\"raw\":{f}}}");
        }
        Pat::Arr(e) => {
            out.push_str("{\"arr\":");
            pat(out, e);
            out.push('}');
        }
        Pat::Or(alts) => {
            out.push_str("{\"or\":[");
            for (i, a) in alts.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pat(out, a);
            }
            out.push_str("]}");
        }
        Pat::Obj(mark, kids) => {
            out.push_str("{\"obj\":[");
            for (i, (k, v)) in kids.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                string(out, k);
                out.push(',');
                pat(out, v);
                out.push(']');
            }
            out.push_str("],\"mark\":");
            match mark {
                Some(m) => {
                    let _ = write!(out, "{m}");
                }
                None => out.push_str("null"),
            }
            out.push('}');
        }
    }
}

fn cond(out: &mut String, c: &Cond) {
    let (kind, s) = match c {
        Cond::PathContains(s) => ("path_contains", s),
        Cond::PathEndsWith(s) => ("path_ends_with", s),
        Cond::ContentTypeStartsWith(s) => ("content_type_starts_with", s),
        Cond::ContentTypeContains(s) => ("content_type_contains", s),
    };
    out.push('[');
    string(out, kind);
    out.push(',');
    string(out, s);
    out.push(']');
}

/// A JSON array of strings.
fn strings(out: &mut String, items: &[&str]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        string(out, s);
    }
    out.push(']');
}

fn conds(out: &mut String, cs: &[Cond]) {
    out.push('[');
    for (i, c) in cs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cond(out, c);
    }
    out.push(']');
}

fn framing(out: &mut String, f: Option<Framing>) {
    match f {
        Some(f) => string(out, f.name()),
        None => out.push_str("null"),
    }
}

fn descriptor(out: &mut String, d: &Descriptor) {
    out.push_str("{\n   \"id\": ");
    string(out, d.id);
    out.push_str(",\n   \"display\": ");
    string(out, d.display);
    out.push_str(",\n   \"detect\": [");
    for (i, rule) in d.detect.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        conds(out, rule);
    }
    out.push_str("],\n   \"streams_by_path\": ");
    conds(out, d.streams_by_path);
    out.push_str(",\n   \"path_model\": ");
    match d.path_model {
        None => out.push_str("null"),
        Some(pm) => {
            out.push_str("{\"after\": ");
            string(out, pm.after);
            let _ = write!(out, ", \"last\": {}, \"end\": ", pm.last);
            match pm.end {
                ModelEnd::Char(c) => string(out, &c.to_string()),
                ModelEnd::LastSlash => out.push_str("\"last_slash\""),
            }
            let _ = write!(out, ", \"percent_decoded\": {}}}", pm.percent_decoded);
        }
    }
    let _ = write!(
        out,
        ",\n   \"prompt_adds_cache\": {},\n   \"completion_adds_reasoning\": {},\n   \"brace_framing\": ",
        d.arithmetic.prompt_adds_cache, d.arithmetic.completion_adds_reasoning
    );
    framing(out, Some(d.brace_framing));
    out.push_str(",\n   \"nul_framing\": ");
    framing(out, d.nul_framing);
    out.push_str(",\n   \"usage_headers\": [");
    for (i, (name, f)) in d.usage_headers.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('[');
        string(out, name);
        let _ = write!(out, ", {f}]");
    }
    out.push_str("],\n   \"body_markers\": [");
    for (i, m) in d.body_markers.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        string(out, m);
    }
    out.push_str("],\n   \"request\": ");
    pat(out, d.request);
    out.push_str(",\n   \"response\": ");
    pat(out, d.response);
    out.push_str(",\n   \"response_array\": ");
    pat(out, d.response_array);
    out.push_str(",\n   \"inner\": ");
    match d.inner {
        Some(p) => pat(out, p),
        None => out.push_str("null"),
    }
    out.push_str("\n  }");
}

fn table(out: &mut String, rows: &[(&str, Encoding)]) {
    out.push('[');
    for (i, (name, enc)) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('[');
        string(out, name);
        out.push_str(", ");
        string(out, enc.name());
        out.push(']');
    }
    out.push(']');
}

/// The whole registry, and the constants both backends must share.
pub fn registry_json() -> String {
    let mut out = String::from("{\n \"generated_by\": \"cargo test -p llmtally-core (LLMTALLY_BLESS=1 rewrites this file)\",\n \"fields\": {");
    for (i, (name, id)) in field::NAMES.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        string(&mut out, name);
        let _ = write!(out, ": {id}");
    }
    let _ = write!(
        out,
        "}},\n \"constants\": {{\"max_decoded_bytes\": {DEFAULT_MAX_DECODED_BYTES}, \"max_event_bytes\": {DEFAULT_MAX_EVENT_BYTES}, \
         \"model_max\": {MODEL_MAX}, \"response_id_max\": {RESPONSE_ID_MAX}, \"finish_reason_max\": {FINISH_REASON_MAX}, \
         \"finish_reasons_max\": {FINISH_REASONS_MAX}, \"max_texts\": {MAX_TEXTS}, \"json_key_max\": {KEY_MAX}, \"json_bare_max\": {BARE_MAX}, \
         \"count_min_batch\": {MIN_BATCH}, \"count_max_held\": {MAX_HELD}, \"count_lazy_bytes\": {LAZY_BYTES}, \"count_long_held\": {LONG_HELD}, \"count_long_slack\": {LONG_SLACK}, \"usage_slots\": {SLOTS}, \"sniff_max\": {SNIFF_MAX}, \"decode_block\": {BLOCK}, \
         \"zstd_window_log_max\": {ZSTD_WINDOW_LOG_MAX}, \"eventstream_prelude\": {PRELUDE}, \
         \"eventstream_min_message\": {MIN_MESSAGE}}},\n \"models\": "
    );
    table(&mut out, &MODELS);
    out.push_str(",\n \"encodings\": ");
    strings(&mut out, &ENCODINGS);
    out.push_str(",\n \"default_encoding\": ");
    string(&mut out, default_encoding().name());
    out.push_str(",\n \"content_types\": [");
    for (i, (c, k)) in CONTENT_TYPES.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('[');
        cond(&mut out, c);
        out.push_str(", ");
        string(&mut out, k.name());
        out.push(']');
    }
    out.push(']');
    out.push_str(",\n \"model_prefixes\": ");
    table(&mut out, &PREFIXES);
    out.push_str(",\n \"foreign_paths\": [");
    for (i, (rule, ids, d)) in super::FOREIGN_PATHS.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('[');
        conds(&mut out, rule);
        out.push_str(", ");
        strings(&mut out, ids);
        out.push_str(", ");
        string(&mut out, d.id);
        out.push(']');
    }
    out.push(']');
    out.push_str(",\n \"providers\": [\n  ");
    for (i, d) in ALL.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n  ");
        }
        descriptor(&mut out, d);
    }
    out.push_str("\n ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::registry_json;

    const COPY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../python/llmtally/fallback/registry.json"
    );

    /// The fallback's registry is generated from this one; the test fails
    /// when they drift (`LLMTALLY_BLESS=1 cargo test` rewrites the copy).
    #[test]
    fn the_fallbacks_registry_is_current() {
        let want = registry_json();
        if std::env::var_os("LLMTALLY_BLESS").is_some() {
            std::fs::write(COPY, &want).unwrap();
        }
        let have = std::fs::read_to_string(COPY).unwrap_or_default();
        assert!(
            have == want,
            "{COPY} is stale: run `LLMTALLY_BLESS=1 cargo test` and commit the file"
        );
    }
}
