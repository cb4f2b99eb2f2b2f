//! The provider registry: one [`Descriptor`] per provider, `auto` detection,
//! and what request paths tell. Adding a provider is one file here (its
//! descriptor, reusing a family's patterns where its API is one of theirs),
//! one line in [`ALL`], and fixtures; `cargo test` then asks to regenerate
//! the fallback's copy of the registry (`registry.json`).

mod anthropic;
mod azure;
mod bedrock;
mod cohere;
mod export;
mod gemini;
mod mistral;
mod ollama;
mod openai;
mod vertex;

use crate::descriptor::{Cond, Descriptor, ModelEnd};
use crate::usage::MODEL_MAX;

pub use export::registry_json;

/// Every provider, in `auto` detection order: the first whose rule holds
/// wins, and OpenAI (no rules) is the default.
pub static ALL: &[&Descriptor] = &[
    &bedrock::BEDROCK,
    &vertex::VERTEX_AI,
    &gemini::GEMINI,
    &azure::AZURE,
    &anthropic::ANTHROPIC,
    &ollama::OLLAMA,
    &cohere::COHERE,
    &openai::OPENAI,
    &mistral::MISTRAL,
];

/// Paths at which a provider serves another one's API, read in that API's
/// format whatever id the route names: the OpenAI-compatible endpoints of
/// Gemini (`/v1beta/openai/...`), Vertex AI (`.../endpoints/openapi/...`),
/// Cohere (`/compatibility/v1/...`), Anthropic and Bedrock, and Claude on
/// Vertex AI (`.../publishers/anthropic/models/...:rawPredict`). Each rule
/// names the ids it applies to: those whose own format is another.
pub static FOREIGN_PATHS: &[(&[Cond], &[&str], &Descriptor)] = &[
    (
        &[Cond::PathEndsWith("/chat/completions")],
        NOT_OPENAI,
        &openai::OPENAI,
    ),
    (
        &[Cond::PathEndsWith("/embeddings")],
        NOT_OPENAI,
        &openai::OPENAI,
    ),
    (
        &[Cond::PathContains("/publishers/anthropic/")],
        &["vertex-ai", "gemini"],
        &anthropic::ANTHROPIC,
    ),
];
/// The ids whose own responses are not OpenAI's (Ollama's pattern reads both).
const NOT_OPENAI: &[&str] = &["anthropic", "gemini", "vertex-ai", "cohere", "bedrock"];

/// The descriptor for a provider id (any case, surrounding space ignored).
pub fn by_id(id: &str) -> Option<&'static Descriptor> {
    let id = id.trim();
    ALL.iter().copied().find(|d| d.id.eq_ignore_ascii_case(id))
}

/// Resolve a provider id; `auto` (or an empty id) looks at the path and
/// content type; an unknown id is treated as OpenAI-compatible.
pub fn resolve(id: &str, path: &str, content_type: &str) -> &'static Descriptor {
    let trimmed = id.trim();
    if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("auto") {
        return detect(path, content_type);
    }
    let d = by_id(trimmed).unwrap_or(&openai::OPENAI);
    let path = path_only(path);
    FOREIGN_PATHS
        .iter()
        .find(|(rule, ids, _)| ids.contains(&d.id) && rule.iter().all(|c| c.holds(path, "")))
        .map_or(d, |(_, _, other)| other)
}

/// `auto`: the first provider one of whose rules holds entirely.
pub fn detect(path: &str, content_type: &str) -> &'static Descriptor {
    let path = path_only(path);
    let ct = content_type.to_ascii_lowercase();
    ALL.iter()
        .copied()
        .find(|d| {
            d.detect
                .iter()
                .any(|rule| rule.iter().all(|c| c.holds(path, &ct)))
        })
        .unwrap_or(&openai::OPENAI)
}

/// The provider whose format the first bytes of a response show: a binary
/// prelude (a NUL first byte) is an event stream; else the provider whose
/// body marker appears earliest in `head` (registry order breaks ties). None
/// when no marker appears.
pub fn sniff(head: &[u8]) -> Option<&'static Descriptor> {
    if head.first() == Some(&0) {
        return ALL.iter().copied().find(|d| d.nul_framing.is_some());
    }
    let mut best: Option<(usize, &'static Descriptor)> = None;
    for d in ALL.iter().copied() {
        for m in d.body_markers {
            if let Some(at) = memchr::memmem::find(head, m.as_bytes()) {
                match best {
                    Some((b, _)) if b <= at => {}
                    _ => best = Some((at, d)),
                }
            }
        }
    }
    best.map(|(_, d)| d)
}

/// The path without its query string.
pub fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or("")
}

/// `%XX` decoding; malformed escapes stay as they are; invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Descriptor {
    /// The model named by the path, where the API puts it there.
    pub fn path_model(&self, path: &str) -> Option<String> {
        let pm = self.path_model?;
        let path = path_only(path);
        let at = if pm.last {
            path.rfind(pm.after)?
        } else {
            path.find(pm.after)?
        };
        let rest = &path[at + pm.after.len()..];
        let raw = match pm.end {
            ModelEnd::Char(c) => rest.split(c).next().unwrap_or(""),
            ModelEnd::LastSlash => rest.rsplit_once('/')?.0,
        };
        let name = if pm.percent_decoded {
            percent_decode(raw)
        } else {
            raw.to_string()
        };
        (!name.is_empty() && name.len() <= MODEL_MAX).then_some(name)
    }

    /// Whether the path alone says the request streams.
    pub fn path_streams(&self, path: &str) -> bool {
        let path = path_only(path);
        self.streams_by_path.iter().any(|c| c.holds(path, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_and_path_models() {
        let cases = [
            ("/v1/chat/completions", "openai", None),
            ("/v1/messages", "anthropic", None),
            (
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                "gemini",
                Some("gemini-2.5-flash"),
            ),
            (
                "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
                "vertex-ai",
                Some("gemini-2.0-flash-001"),
            ),
            (
                "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream",
                "bedrock",
                Some("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            ),
            (
                "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21",
                "azure",
                Some("my-gpt4o"),
            ),
            ("/api/chat", "ollama", None),
        ];
        for (path, id, model) in cases {
            let d = resolve("auto", path, "");
            assert_eq!(d.id, id, "{path}");
            assert_eq!(d.path_model(path).as_deref(), model, "{path}");
        }
        assert_eq!(
            resolve("auto", "/x", "application/vnd.amazon.eventstream").id,
            "bedrock"
        );
        assert_eq!(resolve("something-new", "/v1/messages", "").id, "openai");
        assert_eq!(resolve(" Anthropic ", "/x", "").id, "anthropic");
        // another API's paths under a provider's own id
        for (id, path, want) in [
            ("gemini", "/v1beta/openai/chat/completions", "openai"),
            ("gemini", "/v1beta/openai/embeddings", "openai"),
            ("vertex-ai", "/v1/projects/p/locations/l/endpoints/openapi/chat/completions", "openai"),
            ("cohere", "/compatibility/v1/chat/completions", "openai"),
            ("anthropic", "/v1/chat/completions?beta=true", "openai"),
            ("bedrock", "/openai/v1/chat/completions", "openai"),
            ("vertex-ai", "/v1/projects/p/locations/l/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict", "anthropic"),
            ("auto", "/v1/projects/p/locations/l/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict", "anthropic"),
            ("azure", "/openai/deployments/d/chat/completions", "azure"),
            ("mistral", "/v1/chat/completions", "mistral"),
            ("ollama", "/v1/chat/completions", "ollama"),
            ("gemini", "/v1beta/models/m:generateContent", "gemini"),
        ] {
            assert_eq!(resolve(id, path, "").id, want, "{id} {path}");
        }
        assert_eq!(percent_decode("a%3Ab%zz%4"), "a:b%zz%4");
    }

    #[test]
    fn ids_are_unique_and_lowercase() {
        for (i, d) in ALL.iter().enumerate() {
            assert_eq!(d.id, d.id.to_ascii_lowercase());
            assert!(ALL[i + 1..].iter().all(|e| e.id != d.id), "{}", d.id);
        }
    }
}
