//! Thin PyO3 bindings: `llmtally._native`. All logic lives in llmtally-core;
//! the Python package wraps these into its public types.

use llmtally_core::tokens::{self, Encoding, ENCODINGS};
use llmtally_core::{self as core, RequestInfo, ResponseMeta};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

type RequestTuple = (Option<String>, bool, bool, u64);
type UsageTuple = (
    u64,
    u64,
    u64,
    u64,
    u64,
    Option<String>,
    Option<String>,
    bool,
    &'static str,
);

#[pyclass(module = "llmtally._native")]
struct ResponseScanner {
    inner: core::ResponseScanner,
}

#[pymethods]
impl ResponseScanner {
    #[new]
    #[pyo3(signature = (provider, request, content_type, content_encoding, status, path, max_decoded_bytes, max_event_bytes))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        provider: &str,
        request: Option<RequestTuple>,
        content_type: String,
        content_encoding: String,
        status: u16,
        path: String,
        max_decoded_bytes: u64,
        max_event_bytes: usize,
    ) -> Self {
        let request = request.map(
            |(model, streaming, include_usage, prompt_tokens)| RequestInfo {
                model,
                streaming,
                include_usage,
                prompt_tokens,
            },
        );
        let meta = ResponseMeta {
            content_type,
            content_encoding,
            status,
            path,
            max_decoded_bytes,
            max_event_bytes,
        };
        ResponseScanner {
            inner: core::ResponseScanner::new(provider, request, &meta),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.inner.feed(chunk);
    }

    fn finish(&mut self) -> UsageTuple {
        usage_tuple(self.inner.finish())
    }

    fn snapshot(&self) -> UsageTuple {
        usage_tuple(self.inner.snapshot())
    }

    fn usage_changes(&self) -> u64 {
        self.inner.usage_changes()
    }

    /// In the order of llmtally.fallback.scanner.STATS.
    fn stats(&self) -> (u64, u64, u64, u64, u64, u64, u64, bool, bool, bool) {
        let s = self.inner.stats();
        (
            s.bytes,
            s.decoded_bytes,
            s.docs,
            s.broken_docs,
            s.errors,
            s.corrupt_frames,
            s.oversized_events,
            s.decode_capped,
            s.decode_failed,
            s.undecodable,
        )
    }
}

fn usage_tuple(u: core::Usage) -> UsageTuple {
    (
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens,
        u.cached_tokens,
        u.reasoning_tokens,
        u.model,
        u.provider_model,
        u.streaming,
        u.source.as_str(),
    )
}

#[pyfunction]
fn parse_request(body: &[u8], provider: &str, path: &str) -> RequestTuple {
    let r = core::parse_request(body, provider, path);
    (r.model, r.streaming, r.include_usage, r.prompt_tokens)
}

/// Tokens of `text`: an explicit encoding, else the model's, else the default.
#[pyfunction]
#[pyo3(signature = (text, model=None, encoding=None))]
fn count_tokens(
    py: Python<'_>,
    text: &str,
    model: Option<&str>,
    encoding: Option<&str>,
) -> PyResult<u64> {
    let result = if text.len() > 1 << 16 {
        py.detach(|| core::count_tokens(text, model, encoding))
    } else {
        core::count_tokens(text, model, encoding)
    };
    result.map_err(|name| {
        PyValueError::new_err(format!(
            "unknown encoding {name:?}; expected one of {:?}",
            ENCODINGS
        ))
    })
}

#[pyfunction]
fn encoding_for_model(model: &str) -> Option<&'static str> {
    tokens::encoding_for_model(model).map(Encoding::name)
}

#[pyfunction]
fn set_default_encoding(name: &str) -> PyResult<()> {
    let e = Encoding::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown encoding {name:?}; expected one of {:?}",
            ENCODINGS
        ))
    })?;
    tokens::set_default_encoding(e);
    Ok(())
}

#[pyfunction]
fn default_encoding() -> &'static str {
    tokens::default_encoding().name()
}

/// The provider whose format is read: an id, or `auto` detection from path and content type.
#[pyfunction]
#[pyo3(signature = (provider, path="", content_type=""))]
fn resolve_provider(provider: &str, path: &str, content_type: &str) -> &'static str {
    core::Provider::resolve(provider, path, content_type).id()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ResponseScanner>()?;
    m.add_function(wrap_pyfunction!(parse_request, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_provider, m)?)?;
    m.add_function(wrap_pyfunction!(encoding_for_model, m)?)?;
    m.add_function(wrap_pyfunction!(set_default_encoding, m)?)?;
    m.add_function(wrap_pyfunction!(default_encoding, m)?)?;
    m.add("DEFAULT_MAX_DECODED_BYTES", core::DEFAULT_MAX_DECODED_BYTES)?;
    m.add("DEFAULT_MAX_EVENT_BYTES", core::DEFAULT_MAX_EVENT_BYTES)?;
    Ok(())
}
