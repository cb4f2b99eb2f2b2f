//! llmtally-core: exact token accounting for LLM API traffic.
//!
//! Feed a response body in pieces of any size to a [`ResponseScanner`] and
//! get the [`Usage`] the provider reported (or, without one, the exact count
//! of the text it streamed). Memory per scanner is fixed and the work per
//! chunk is proportional to its length. Providers are data: one
//! [`Descriptor`] each, in [`PROVIDERS`].
//!
//! The modules are private; this page is the API.

mod base64;
mod decode;
mod descriptor;
mod eventstream;
mod field;
mod json;
mod ndjson;
mod otlp;
mod pretokenize;
mod providers;
mod request;
mod scanner;
mod sse;
mod template;
mod text;
mod tokens;
mod usage;

pub use decode::{parse as parse_content_encoding, Decoder};
pub use descriptor::{Cond, Descriptor, Framing, ModelEnd, PathModel};
pub use eventstream::{Counters as EventStreamCounters, EventStream};
pub use otlp::{
    write_span as write_otlp_span, Attribute as OtlpAttribute, Event as OtlpEvent,
    Span as OtlpSpan, Value as OtlpValue,
};
pub use pretokenize::{class_runs as pretokenizer_class_runs, unicode_classes_text};
pub use providers::{
    registry_json, resolve as resolve_provider, sniff as sniff_provider, ALL as PROVIDERS,
};
pub use request::{parse_request, RequestInfo};
pub use scanner::{
    ResponseMeta, ResponseScanner, Stats, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_EVENT_BYTES,
};
pub use tokens::{
    count_tokens, default_encoding, encoding_for_model, set_default_encoding, Encoding,
    TextCounter, ENCODINGS,
};
pub use usage::{Arithmetic, Source, Usage};

#[cfg(test)]
mod structure {
    use std::collections::{BTreeMap, BTreeSet};

    /// `crate::x` references between top-level modules form no cycle (files
    /// under `providers/` count as `providers`).
    #[test]
    fn modules_form_no_cycle() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut files = vec![];
        for e in std::fs::read_dir(src).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                for f in std::fs::read_dir(&p).unwrap() {
                    files.push((
                        p.file_name().unwrap().to_string_lossy().into_owned(),
                        f.unwrap().path(),
                    ));
                }
            } else if p.file_stem().unwrap() != "lib" {
                files.push((p.file_stem().unwrap().to_string_lossy().into_owned(), p));
            }
        }
        for (module, path) in files {
            let text = std::fs::read_to_string(path).unwrap();
            // the unit tests sit at the end of each file, in `#[cfg(test)] mod tests`
            let code = text.split("#[cfg(test)]\nmod ").next().unwrap();
            let mut targets = vec![];
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + 7..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `use crate::{a, b::c}`: the first segment of each path
                    let inner = &group[..group.find('}').unwrap_or(group.len())];
                    targets.extend(
                        inner
                            .split(',')
                            .map(|p| p.trim().split("::").next().unwrap_or("")),
                    );
                } else {
                    targets.push(
                        rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or(""),
                    );
                }
            }
            for target in targets {
                if target != module
                    && !target.is_empty()
                    && target.chars().next().unwrap().is_ascii_lowercase()
                {
                    edges
                        .entry(module.clone())
                        .or_default()
                        .insert(target.to_string());
                }
            }
        }
        fn visit(
            m: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) {
            if done.contains(m) {
                return;
            }
            assert!(
                !path.iter().any(|p| p == m),
                "module cycle: {} -> {m}",
                path.join(" -> ")
            );
            path.push(m.to_string());
            for t in edges.get(m).into_iter().flatten() {
                visit(t, edges, path, done);
            }
            path.pop();
            done.insert(m.to_string());
        }
        let mut done = BTreeSet::new();
        for m in edges.keys() {
            visit(m, &edges, &mut vec![], &mut done);
        }
        assert!(
            edges["scanner"].contains("providers") && edges["providers"].contains("descriptor")
        );
    }
}
