//! llmtally-core: exact token accounting for LLM API traffic.
//!
//! Feed a response body in pieces of any size to a [`ResponseScanner`] and
//! get the [`Usage`] the provider reported. Memory per scanner is fixed and
//! the work per chunk is proportional to its length.

pub mod base64;
pub mod decode;
pub mod eventstream;
pub mod formats;
pub mod json;
pub mod ndjson;
pub mod provider;
pub mod request;
pub mod scanner;
pub mod sse;
pub mod text;
pub mod tokens;
pub mod usage;

pub use provider::Provider;
pub use request::{parse_request, RequestInfo};
pub use scanner::{
    ResponseMeta, ResponseScanner, Stats, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_EVENT_BYTES,
};
pub use tokens::{count_tokens, Encoding};
pub use usage::{Source, Usage};
