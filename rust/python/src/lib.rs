//! Thin PyO3 bindings: `llmtally._native` (typed in `_native.pyi`). All logic
//! lives in llmtally-core; results are the public Python types of
//! `llmtally._types` (`RequestInfo` built here by keyword, `Usage` by setting
//! its fields, see `usage_obj`), so both backends hand out the same classes.
//! `Usage`'s class is looked up once (a reload of `_types` is not followed).

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

/// `llmtally._types.Usage`, made without its `__init__`: the class, and
/// `object.__new__`, looked up once.
fn usage_parts(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    static PARTS: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
    PARTS.get_or_try_init(py, || {
        let cls = types(py)?.getattr("Usage")?.unbind();
        let new = py
            .import("builtins")?
            .getattr("object")?
            .getattr("__new__")?
            .unbind();
        Ok((cls, new))
    })
}

/// A `Usage` with every field set as the frozen dataclass's own `__init__`
/// sets them (`object.__setattr__`, here the C function behind it): the same
/// object, for a third of the cost of a call by keyword (a snapshot follows
/// every chunk that brought text).
fn usage_obj<'py>(py: Python<'py>, u: core::Usage) -> PyResult<Bound<'py, PyAny>> {
    let (cls, new) = usage_parts(py)?;
    let obj = new.bind(py).call1((cls.bind(py),))?;
    let set = |name: &Bound<'py, PyString>, value: Bound<'py, PyAny>| -> PyResult<()> {
        // SAFETY: three valid object pointers; the call takes no reference of them
        let r = unsafe {
            pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr())
        };
        if r < 0 {
            Err(PyErr::fetch(py))
        } else {
            Ok(())
        }
    };
    set(
        intern!(py, "prompt_tokens"),
        u.prompt_tokens.into_pyobject(py)?.into_any(),
    )?;
    set(
        intern!(py, "completion_tokens"),
        u.completion_tokens.into_pyobject(py)?.into_any(),
    )?;
    set(
        intern!(py, "total_tokens"),
        u.total_tokens.into_pyobject(py)?.into_any(),
    )?;
    set(
        intern!(py, "cached_tokens"),
        u.cached_tokens.into_pyobject(py)?.into_any(),
    )?;
    set(
        intern!(py, "cache_write_tokens"),
        u.cache_write_tokens.into_pyobject(py)?.into_any(),
    )?;
    set(
        intern!(py, "reasoning_tokens"),
        u.reasoning_tokens.into_pyobject(py)?.into_any(),
    )?;
    set(intern!(py, "model"), u.model.into_pyobject(py)?.into_any())?;
    set(
        intern!(py, "provider_model"),
        u.provider_model.into_pyobject(py)?.into_any(),
    )?;
    set(
        intern!(py, "streaming"),
        PyBool::new(py, u.streaming).to_owned().into_any(),
    )?;
    set(
        intern!(py, "source"),
        PyString::new(py, u.source.as_str()).into_any(),
    )?;
    set(
        intern!(py, "response_id"),
        u.response_id.into_pyobject(py)?.into_any(),
    )?;
    set(
        intern!(py, "finish_reasons"),
        PyTuple::new(py, u.finish_reasons)?.into_any(),
    )?;
    Ok(obj)
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
    if let Ok(d) = attrs.cast_exact::<PyDict>() {
        out.reserve(d.len());
        for (k, v) in d.iter() {
            out.push((utf8(k.cast::<PyString>()?)?, otlp_value(&v, 0)?));
        }
        return Ok(out);
    }
    for item in attrs.call_method0(intern!(py, "items"))?.try_iter()? {
        let (k, v): (Bound<'_, PyString>, Bound<'_, PyAny>) = item?.extract()?;
        out.push((utf8(&k)?, otlp_value(&v, 0)?));
    }
    Ok(out)
}

/// A span id or trace id in lowercase hex (as a W3C traceparent writes it), or the id taken from
/// `random` when `hex` is empty; an all-zero random id gets a last byte of 1 (an all-zero id is invalid).
fn span_id_bytes<const N: usize>(hex: &str, random: &[u8]) -> PyResult<[u8; N]> {
    let mut out = [0u8; N];
    if hex.is_empty() {
        out.copy_from_slice(random);
        if out.iter().all(|&b| b == 0) {
            out[N - 1] = 1;
        }
        return Ok(out);
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let h = hex.as_bytes();
    if h.len() != 2 * N {
        return Err(PyValueError::new_err(
            "an id is not lowercase hex of its length",
        ));
    }
    for (i, pair) in h.chunks(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
            _ => {
                return Err(PyValueError::new_err(
                    "an id is not lowercase hex of its length",
                ))
            }
        }
    }
    Ok(out)
}

/// One span row (see `_native.pyi`, `encode_spans`): a finished CLIENT span.
fn otlp_row(row: &Bound<'_, PyAny>, random: &[u8]) -> PyResult<OtlpSpan> {
    let row = row.cast::<PyTuple>()?;
    if row.len() != 9 {
        return Err(PyValueError::new_err("a span row has 9 fields"));
    }
    let text = |i: usize| -> PyResult<Vec<u8>> { utf8(row.get_item(i)?.cast::<PyString>()?) };
    let trace_hex = row.get_item(1)?;
    let parent_hex = row.get_item(2)?;
    let parent_hex = parent_hex.cast::<PyString>()?.to_str()?;
    let mut events = vec![];
    for e in row.get_item(8)?.try_iter()? {
        let e = e?;
        let e = e.cast::<PyTuple>()?;
        let (name, time_ns, attrs) = (e.get_item(0)?, e.get_item(1)?, e.get_item(2)?);
        events.push(OtlpEvent {
            time_ns: time_ns.extract()?,
            name: utf8(name.cast::<PyString>()?)?,
            attributes: otlp_attributes(&attrs)?,
        });
    }
    let error = row.get_item(6)?;
    let (status_code, status_message) = if error.is_none() {
        (0, vec![])
    } else {
        (2, utf8(error.cast::<PyString>()?)?)
    };
    Ok(OtlpSpan {
        trace_id: span_id_bytes::<16>(trace_hex.cast::<PyString>()?.to_str()?, &random[..16])?,
        span_id: span_id_bytes::<8>("", &random[16..24])?,
        trace_state: text(3)?,
        parent: if parent_hex.is_empty() {
            None
        } else {
            Some((span_id_bytes::<8>(parent_hex, &[])?, true))
        },
        name: text(0)?,
        kind: 3, // CLIENT
        start_ns: row.get_item(4)?.extract()?,
        end_ns: row.get_item(5)?.extract()?,
        attributes: otlp_attributes(&row.get_item(7)?)?,
        events,
        status_code,
        status_message,
    })
}

/// The spans of one resource and scope as the `spans` fields of their ScopeSpans message, the bytes
/// `llmtally.fallback.otlp.encode_spans` writes for them. `random`: 24 bytes a span, its new ids.
#[pyfunction]
fn encode_spans<'py>(
    py: Python<'py>,
    spans: &Bound<'py, PyAny>,
    random: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(1024);
    for (i, sp) in spans.try_iter()?.enumerate() {
        let ids = random
            .get(24 * i..24 * i + 24)
            .ok_or_else(|| PyValueError::new_err("random: 24 bytes a span"))?;
        core::write_otlp_span(&mut out, &otlp_row(&sp?, ids)?);
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
