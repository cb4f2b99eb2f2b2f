//! Provider formats: which JSON paths carry usage, and how to combine them.
//! Each format is a union of the documents its provider's APIs send (a path
//! that does not occur costs nothing).

/// Declares a module's `FORMAT` from its document pattern `DOC`, with the
/// array form (`[DOC, DOC, ...]`) derived from it.
macro_rules! declare_format {
    (inner: $inner:expr, prompt_adds_cache: $pac:expr, completion_adds_reasoning: $car:expr) => {
        static ARRAY: crate::json::Pat = crate::json::Pat::Arr(&DOC);
        pub static FORMAT: super::Format = super::Format {
            pat: &DOC,
            array: &ARRAY,
            inner: $inner,
            prompt_adds_cache: $pac,
            completion_adds_reasoning: $car,
        };
    };
}

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod ollama;
pub mod openai;

use crate::json::Pat;
use crate::provider::Provider;

pub struct Format {
    /// Paths of interest in each JSON document of the response.
    pub pat: &'static Pat,
    /// The same documents streamed as the elements of one JSON array.
    pub array: &'static Pat,
    /// Shape of documents wrapped in base64 `bytes` strings (Bedrock).
    pub inner: Option<&'static Pat>,
    /// The provider's input count excludes cache reads and writes: add them.
    pub prompt_adds_cache: bool,
    /// The provider's output count excludes reasoning tokens: add them.
    pub completion_adds_reasoning: bool,
}

pub fn for_provider(p: Provider) -> &'static Format {
    match p {
        Provider::Anthropic => &anthropic::FORMAT,
        Provider::Gemini | Provider::VertexAI => &gemini::FORMAT,
        Provider::Bedrock => &bedrock::FORMAT,
        Provider::Ollama => &ollama::FORMAT,
        Provider::OpenAI | Provider::Azure | Provider::Mistral => &openai::FORMAT,
    }
}
