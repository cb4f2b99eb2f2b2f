//! A provider as data: how to recognise it, which JSON paths of its requests
//! and responses matter, how its numbers combine, and what its paths tell.
//! One [`Descriptor`] per provider lives in `providers/`; the registry
//! export hands the same data to the pure-Python fallback.

use crate::field::Field;
use crate::json::Pat;
use crate::usage::Arithmetic;

/// A test on the request path (query string excluded) or the content type.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    PathContains(&'static str),
    PathEndsWith(&'static str),
    ContentTypeStartsWith(&'static str),
    ContentTypeContains(&'static str),
}

impl Cond {
    /// `path` without its query; `content_type` lowercased.
    pub(crate) fn holds(self, path: &str, content_type: &str) -> bool {
        match self {
            Cond::PathContains(s) => path.contains(s),
            Cond::PathEndsWith(s) => path.ends_with(s),
            Cond::ContentTypeStartsWith(s) => content_type.starts_with(s),
            Cond::ContentTypeContains(s) => content_type.contains(s),
        }
    }
}

/// Where a model name ends in the path.
#[derive(Debug, Clone, Copy)]
pub enum ModelEnd {
    /// At the first occurrence of the character (or the end of the path).
    Char(char),
    /// At the last `/` (Bedrock `/model/{id}/{operation}`).
    LastSlash,
}

/// The model named by the path, after a marker.
#[derive(Debug, Clone, Copy)]
pub struct PathModel {
    pub after: &'static str,
    /// Take the last occurrence of the marker (else the first).
    pub last: bool,
    pub end: ModelEnd,
    pub percent_decoded: bool,
}

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Json,
    /// One JSON array whose elements are the documents (Gemini without `alt=sse`).
    JsonArray,
    Ndjson,
    EventStream,
}

impl Framing {
    pub fn name(self) -> &'static str {
        match self {
            Framing::Sse => "sse",
            Framing::Json => "json",
            Framing::JsonArray => "json-array",
            Framing::Ndjson => "ndjson",
            Framing::EventStream => "eventstream",
        }
    }
}

/// Bytes held while the framing is undecided (a BOM prefix and whitespace).
pub(crate) const SNIFF_MAX: usize = 4096;

/// The framing a content type tells, first match wins (lowercased; without
/// a match the first bytes decide).
pub(crate) const CONTENT_TYPES: &[(Cond, Framing)] = &[
    (
        Cond::ContentTypeStartsWith("application/vnd.amazon.eventstream"),
        Framing::EventStream,
    ),
    (Cond::ContentTypeContains("event-stream"), Framing::Sse),
    (Cond::ContentTypeContains("ndjson"), Framing::Ndjson),
    (Cond::ContentTypeContains("jsonl"), Framing::Ndjson),
    // Cohere's v1 streams
    (Cond::ContentTypeContains("stream+json"), Framing::Ndjson),
    (Cond::ContentTypeContains("json"), Framing::Json),
];

pub struct Descriptor {
    /// The id operators configure (`x-llm-provider`), and the `llm` label.
    pub id: &'static str,
    /// The name in the `provider` metadata.
    pub display: &'static str,
    /// `auto` picks this provider when every condition of one rule holds
    /// (providers are tried in registry order).
    pub detect: &'static [&'static [Cond]],
    /// Paths of interest in the request body.
    pub request: &'static Pat,
    /// Paths of interest in each JSON document of the response.
    pub response: &'static Pat,
    /// The same documents as the elements of one streamed JSON array.
    pub response_array: &'static Pat,
    /// Shape of documents wrapped in base64 `bytes` strings (Bedrock).
    pub inner: Option<&'static Pat>,
    pub arithmetic: Arithmetic,
    /// Framing of a body without a telling content type that starts with `{`.
    pub brace_framing: Framing,
    /// Framing of such a body that starts with a NUL byte (a binary prelude), if any.
    pub nul_framing: Option<Framing>,
    pub path_model: Option<PathModel>,
    /// The request streams unless its body says otherwise when one of these holds.
    pub streams_by_path: &'static [Cond],
    /// Response headers that report usage (lowercase names), read before the body.
    pub usage_headers: &'static [(&'static str, Field)],
    /// Byte strings whose presence near the start of a response body tells
    /// this provider's format when nothing else does (`llmtally scan` on a file).
    pub body_markers: &'static [&'static str],
}
