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
mod providers;
mod request;
mod scanner;
mod sse;
mod text;
mod tokens;
mod usage;

pub use decode::{parse as parse_content_encoding, Codec, Decoder};
pub use descriptor::{Cond, Descriptor, Framing, ModelEnd, PathModel};
pub use eventstream::{
    Counters as EventStreamCounters, EventStream, Message as EventStreamMessage,
};
pub use providers::{
    by_id as provider_by_id, registry_json, resolve as resolve_provider, ALL as PROVIDERS,
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
