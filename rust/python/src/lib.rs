//! Thin PyO3 bindings: `llmtally._native` (typed in `_native.pyi`). All logic
//! lives in llmtally-core; results are the public Python types of
//! `llmtally._types` (`Usage`, `RequestInfo`), built here by keyword, so
//! both backends hand out the same classes.

use llmtally_core::{
    self as core, Encoding, OtlpAttribute, OtlpEvent, OtlpSpan, OtlpValue, RequestInfo,
    ResponseMeta, ENCODINGS,
};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// `llmtally._types`, imported once.
fn types(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static TYPES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    Ok(TYPES
        .get_or_try_init(py, || py.import("llmtally._types").map(Bound::unbind))?
        .bind(py))
}

fn usage_obj<'py>(py: Python<'py>, u: core::Usage) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("prompt_tokens", u.prompt_tokens)?;
    kw.set_item("completion_tokens", u.completion_tokens)?;
    kw.set_item("total_tokens", u.total_tokens)?;
    kw.set_item("cached_tokens", u.cached_tokens)?;
    kw.set_item("cache_write_tokens", u.cache_write_tokens)?;
    kw.set_item("reasoning_tokens", u.reasoning_tokens)?;
    kw.set_item("model", u.model)?;
    kw.set_item("provider_model", u.provider_model)?;
    kw.set_item("streaming", u.streaming)?;
    kw.set_item("source", u.source.as_str())?;
    kw.set_item("response_id", u.response_id)?;
    kw.set_item("finish_reasons", PyTuple::new(py, u.finish_reasons)?)?;
    types(py)?.getattr("Usage")?.call((), Some(&kw))
}

/// Any object with the attributes of `llmtally.RequestInfo`;
/// `max_output_tokens` may be missing (the scanner does not use it): a
/// missing or non-integer one is None.
fn request_of(obj: &Bound<'_, PyAny>) -> PyResult<RequestInfo> {
    let max_output_tokens = obj
        .getattr("max_output_tokens")
        .ok()
        .and_then(|v| v.extract::<Option<u64>>().ok())
        .flatten();
    Ok(RequestInfo {
        model: obj.getattr("model")?.extract()?,
        streaming: obj.getattr("streaming")?.extract()?,
        include_usage: obj.getattr("include_usage")?.extract()?,
        prompt_tokens: obj.getattr("prompt_tokens")?.extract()?,
        max_output_tokens,
    })
}

/// Inputs past this many bytes are worked on with the GIL released, so a host
/// thread scanning or estimating a large body leaves the others running.
const DETACH_BYTES: usize = 1 << 16;

#[pyclass(module = "llmtally._native")]
struct ResponseScanner {
    inner: core::ResponseScanner,
    /// bytes fed since the last snapshot: the text that snapshot will count
    unsettled: usize,
    /// a chunk past this is fed with the GIL released (smaller for a compressed body: it inflates)
    detach_at: usize,
}

#[pymethods]
impl ResponseScanner {
    #[new]
    #[pyo3(signature = (provider, request=None, *, content_type=String::new(), content_encoding=String::new(),
                        path=String::new(), headers=Vec::new(), max_decoded_bytes=core::DEFAULT_MAX_DECODED_BYTES,
                        max_event_bytes=core::DEFAULT_MAX_EVENT_BYTES))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        provider: &str,
        request: Option<&Bound<'_, PyAny>>,
        content_type: String,
        content_encoding: String,
        path: String,
        headers: Vec<(String, String)>,
        max_decoded_bytes: u64,
        max_event_bytes: usize,
    ) -> PyResult<Self> {
        let request = request.map(request_of).transpose()?;
        let encoding = content_encoding.trim();
        let detach_at = if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
            DETACH_BYTES
        } else {
            DETACH_BYTES / 64
        };
        let meta = ResponseMeta {
            content_type,
            content_encoding,
            path,
            headers,
            max_decoded_bytes,
            max_event_bytes,
        };
        Ok(ResponseScanner {
            inner: core::ResponseScanner::new(provider, request, &meta),
            unsettled: 0,
            detach_at,
        })
    }

    fn feed(&mut self, py: Python<'_>, chunk: &[u8]) {
        self.unsettled = self.unsettled.saturating_add(chunk.len());
        if chunk.len() > self.detach_at {
            let inner = &mut self.inner;
            py.detach(|| inner.feed(chunk));
        } else {
            self.inner.feed(chunk);
        }
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let u = self.settle(py, core::ResponseScanner::finish);
        usage_obj(py, u)
    }

    fn snapshot<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let u = self.settle(py, core::ResponseScanner::snapshot);
        usage_obj(py, u)
    }

    fn usage_changes(&self) -> u64 {
        self.inner.usage_changes()
    }

    fn text_changes(&self) -> u64 {
        self.inner.text_changes()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("bytes", s.bytes)?;
        d.set_item("decoded_bytes", s.decoded_bytes)?;
        d.set_item("docs", s.docs)?;
        d.set_item("broken_docs", s.broken_docs)?;
        d.set_item("errors", s.errors)?;
        d.set_item("corrupt_frames", s.corrupt_frames)?;
        d.set_item("oversized_events", s.oversized_events)?;
        d.set_item("decode_capped", s.decode_capped)?;
        d.set_item("decode_failed", s.decode_failed)?;
        d.set_item("undecodable", s.undecodable)?;
        Ok(d)
    }

    /// The provider id whose format is read (`auto` and unknown ids resolved).
    #[getter]
    fn provider(&self) -> &'static str {
        self.inner.provider().id
    }

    /// The framing in use (`sse`, `json`, `json-array`, `ndjson`, `eventstream`), None until decided.
    #[getter]
    fn framing(&self) -> Option<&'static str> {
        self.inner.framing().map(core::Framing::name)
    }
}

impl ResponseScanner {
    /// `f` (snapshot or finish: they count the text fed since the last one),
    /// with the GIL released when that text is large.
    fn settle(
        &mut self,
        py: Python<'_>,
        f: fn(&mut core::ResponseScanner) -> core::Usage,
    ) -> core::Usage {
        let unsettled = std::mem::take(&mut self.unsettled);
        let inner = &mut self.inner;
        if unsettled > DETACH_BYTES {
            py.detach(|| f(inner))
        } else {
            f(inner)
        }
    }
}

#[pyfunction]
#[pyo3(signature = (body, provider, path=""))]
fn parse_request<'py>(
    py: Python<'py>,
    body: &[u8],
    provider: &str,
    path: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let r = if body.len() > DETACH_BYTES {
        py.detach(|| core::parse_request(body, provider, path))
    } else {
        core::parse_request(body, provider, path)
    };
    let kw = PyDict::new(py);
    kw.set_item("model", r.model)?;
    kw.set_item("streaming", r.streaming)?;
    kw.set_item("include_usage", r.include_usage)?;
    kw.set_item("prompt_tokens", r.prompt_tokens)?;
    kw.set_item("max_output_tokens", r.max_output_tokens)?;
    types(py)?.getattr("RequestInfo")?.call((), Some(&kw))
}

fn unknown_encoding(name: &str) -> PyErr {
    PyValueError::new_err(format!(
        "unknown encoding {name:?}; expected one of {ENCODINGS:?}"
    ))
}

/// Tokens of `text`: an explicit encoding, else the model's, else the default.
#[pyfunction]
#[pyo3(signature = (text, *, model=None, encoding=None))]
fn count_tokens(
    py: Python<'_>,
    text: &str,
    model: Option<&str>,
    encoding: Option<&str>,
) -> PyResult<u64> {
    let result = if text.len() > DETACH_BYTES {
        py.detach(|| core::count_tokens(text, model, encoding))
    } else {
        core::count_tokens(text, model, encoding)
    };
    result.map_err(|name| unknown_encoding(&name))
}

#[pyfunction]
fn encoding_for_model(model: &str) -> Option<&'static str> {
    core::encoding_for_model(model).map(Encoding::name)
}

#[pyfunction]
fn set_default_encoding(name: &str) -> PyResult<()> {
    let e = Encoding::from_name(name).ok_or_else(|| unknown_encoding(name))?;
    core::set_default_encoding(e);
    Ok(())
}

#[pyfunction]
fn default_encoding() -> &'static str {
    core::default_encoding().name()
}

/// The provider whose format is read: an id, or `auto` detection from path and content type.
#[pyfunction]
#[pyo3(signature = (provider, path="", content_type=""))]
fn resolve_provider(provider: &str, path: &str, content_type: &str) -> &'static str {
    core::resolve_provider(provider, path, content_type).id
}

/// The provider whose body markers appear in the first bytes of a response, if any.
#[pyfunction]
fn sniff_provider(head: &[u8]) -> Option<&'static str> {
    core::sniff_provider(head).map(|d| d.id)
}

/// The registry the fallback is generated from (the same JSON as its `registry.json`).
#[pyfunction]
fn registry_json() -> String {
    core::registry_json()
}

/// The UTF-8 bytes of a str, as Python's `s.encode("utf-8", "replace")` (a lone surrogate becomes `?`).
fn utf8(s: &Bound<'_, PyString>) -> PyResult<Vec<u8>> {
    match s.to_str() {
        Ok(t) => Ok(t.as_bytes().to_vec()),
        Err(_) => s
            .call_method1("encode", ("utf-8", "replace"))?
            .extract::<Vec<u8>>(),
    }
}

/// The deepest list of lists an attribute value may be (llmtally's are flat).
const MAX_VALUE_DEPTH: usize = 32;

/// An attribute value, as `otlp_wire._any_value` reads it: by exact type (a bool is not an int, a str
/// subclass is written as its `str()`).
fn otlp_value(v: &Bound<'_, PyAny>, depth: usize) -> PyResult<OtlpValue> {
    if v.is_exact_instance_of::<PyString>() {
        return Ok(OtlpValue::Str(utf8(v.cast::<PyString>()?)?));
    }
    if v.is_exact_instance_of::<PyBool>() {
        return Ok(OtlpValue::Bool(v.is_truthy()?));
    }
    if v.is_exact_instance_of::<PyInt>() {
        let n = match v.extract::<i64>() {
            Ok(n) => n as u64,
            Err(_) => v.bitand(u64::MAX)?.extract::<u64>()?, // two's complement, as the proto's int64
        };
        return Ok(OtlpValue::Int(n));
    }
    if v.is_exact_instance_of::<PyFloat>() {
        return Ok(OtlpValue::Double(v.extract::<f64>()?));
    }
    if v.is_exact_instance_of::<PyList>() || v.is_exact_instance_of::<PyTuple>() {
        if depth >= MAX_VALUE_DEPTH {
            return Err(PyValueError::new_err(
                "an attribute value nests lists too deeply",
            ));
        }
        let items = v
            .try_iter()?
            .map(|x| otlp_value(&x?, depth + 1))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(OtlpValue::Array(items));
    }
    Ok(OtlpValue::Str(utf8(&v.str()?)?))
}

/// The (key, value) pairs of a mapping (None or empty: none).
fn otlp_attributes(attrs: &Bound<'_, PyAny>) -> PyResult<Vec<OtlpAttribute>> {
    let py = attrs.py();
    if attrs.is_none() || !attrs.is_truthy()? {
        return Ok(vec![]);
    }
    let mut out = vec![];
    for item in attrs.call_method0(intern!(py, "items"))?.try_iter()? {
        let (k, v): (Bound<'_, PyString>, Bound<'_, PyAny>) = item?.extract()?;
        out.push((utf8(&k)?, otlp_value(&v, 0)?));
    }
    Ok(out)
}

/// One SDK `ReadableSpan`, read as `otlp_wire._span` reads it.
fn otlp_span(sp: &Bound<'_, PyAny>) -> PyResult<OtlpSpan> {
    let py = sp.py();
    let ctx = sp.getattr(intern!(py, "context"))?;
    let state = ctx.getattr(intern!(py, "trace_state"))?;
    let trace_state = if state.is_truthy()? {
        utf8(
            state
                .call_method0(intern!(py, "to_header"))?
                .cast::<PyString>()?,
        )?
    } else {
        vec![]
    };
    let parent = sp.getattr(intern!(py, "parent"))?;
    let parent = if parent.is_none() {
        None
    } else {
        let id: u64 = parent.getattr(intern!(py, "span_id"))?.extract()?;
        Some((
            id.to_be_bytes(),
            parent.getattr(intern!(py, "is_remote"))?.is_truthy()?,
        ))
    };
    let mut events = vec![];
    for e in sp.getattr(intern!(py, "events"))?.try_iter()? {
        let e = e?;
        events.push(OtlpEvent {
            time_ns: e.getattr(intern!(py, "timestamp"))?.extract()?,
            name: e
                .getattr(intern!(py, "name"))?
                .extract::<String>()?
                .into_bytes(),
            attributes: otlp_attributes(&e.getattr(intern!(py, "attributes"))?)?,
        });
    }
    let status = sp.getattr(intern!(py, "status"))?;
    let status_code: u32 = status
        .getattr(intern!(py, "status_code"))?
        .getattr(intern!(py, "value"))?
        .extract()?;
    let description = status.getattr(intern!(py, "description"))?;
    let status_message = if status_code != 0 && description.is_truthy()? {
        utf8(description.cast::<PyString>()?)?
    } else {
        vec![]
    };
    let kind: u32 = sp
        .getattr(intern!(py, "kind"))?
        .getattr(intern!(py, "value"))?
        .extract()?; // the SDK's INTERNAL is 0, the proto's 1
    Ok(OtlpSpan {
        trace_id: ctx
            .getattr(intern!(py, "trace_id"))?
            .extract::<u128>()?
            .to_be_bytes(),
        span_id: ctx
            .getattr(intern!(py, "span_id"))?
            .extract::<u64>()?
            .to_be_bytes(),
        trace_state,
        parent,
        name: utf8(sp.getattr(intern!(py, "name"))?.cast::<PyString>()?)?,
        kind: kind + 1,
        start_ns: sp.getattr(intern!(py, "start_time"))?.extract()?,
        end_ns: sp.getattr(intern!(py, "end_time"))?.extract()?,
        attributes: otlp_attributes(&sp.getattr(intern!(py, "attributes"))?)?,
        events,
        status_code,
        status_message,
    })
}

/// The spans of one resource and scope as the `spans` fields of their ScopeSpans message, the bytes
/// `otlp_wire` writes for them.
#[pyfunction]
fn encode_spans<'py>(py: Python<'py>, spans: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(1024);
    for sp in spans.try_iter()? {
        core::write_otlp_span(&mut out, &otlp_span(&sp?)?);
    }
    Ok(PyBytes::new(py, &out))
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
    m.add_function(wrap_pyfunction!(registry_json, m)?)?;
    m.add_function(wrap_pyfunction!(sniff_provider, m)?)?;
    m.add_function(wrap_pyfunction!(encode_spans, m)?)?;
    m.add("DEFAULT_MAX_DECODED_BYTES", core::DEFAULT_MAX_DECODED_BYTES)?;
    m.add("DEFAULT_MAX_EVENT_BYTES", core::DEFAULT_MAX_EVENT_BYTES)?;
    Ok(())
}
