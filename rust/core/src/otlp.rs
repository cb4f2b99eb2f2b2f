//! OTLP trace spans in the protobuf wire format, for the host's span
//! exporter: what the host's Python encoder (`llmtally.otlp_wire`) writes,
//! byte for byte, without an object per attribute or the GIL.
//!
//! Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and
//! common/v1/common.proto. [`write_span`] writes one `Span` as field 2 of
//! its `ScopeSpans`; the host adds the resource and scope around them.

/// An attribute value (`AnyValue`): string 1, bool 2, int 3, double 4, array 5.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Vec<u8>),
    Bool(bool),
    /// int64, two's complement (the host masks wider integers to 64 bits)
    Int(u64),
    Double(f64),
    Array(Vec<Value>),
}

/// A `KeyValue`: key 1, value 2.
pub type Attribute = (Vec<u8>, Value);

/// A span event: time 1, name 2, attributes 3.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub time_ns: u64,
    pub name: Vec<u8>,
    pub attributes: Vec<Attribute>,
}

/// A finished span, as the OTLP `Span` message holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// the W3C tracestate header ("" without one)
    pub trace_state: Vec<u8>,
    /// the parent's span id, and whether the parent is remote
    pub parent: Option<([u8; 8], bool)>,
    pub name: Vec<u8>,
    /// the proto's SpanKind (INTERNAL 1 .. CONSUMER 5)
    pub kind: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<Attribute>,
    pub events: Vec<Event>,
    /// Status: UNSET 0, OK 1, ERROR 2; the message is kept only with a code
    pub status_code: u32,
    pub status_message: Vec<u8>,
}

/// Span.flags: the parent's remoteness is known (HAS_IS_REMOTE), and the parent is remote (IS_REMOTE).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The size of a length-delimited field of `len` payload bytes (field numbers below 16: a one-byte tag).
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_delimited(out: &mut Vec<u8>, number: u32, len: usize) {
    put_varint(out, u64::from(number << 3 | 2));
    put_varint(out, len as u64);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_delimited(out, number, bytes.len());
    out.extend_from_slice(bytes);
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::Str(s) => delimited_len(s.len()),
        Value::Bool(_) => 2,
        Value::Int(n) => 1 + varint_len(*n),
        Value::Double(_) => 9,
        Value::Array(items) => delimited_len(array_len(items)),
    }
}

fn array_len(items: &[Value]) -> usize {
    items.iter().map(|x| delimited_len(value_len(x))).sum()
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => put_bytes(out, 1, s),
        Value::Bool(b) => out.extend_from_slice(&[0x10, u8::from(*b)]),
        Value::Int(n) => {
            out.push(0x18);
            put_varint(out, *n);
        }
        Value::Double(d) => {
            out.push(0x21);
            out.extend_from_slice(&d.to_le_bytes());
        }
        Value::Array(items) => {
            put_delimited(out, 5, array_len(items));
            for x in items {
                put_delimited(out, 1, value_len(x));
                put_value(out, x);
            }
        }
    }
}

fn key_value_len((k, v): &Attribute) -> usize {
    delimited_len(k.len()) + delimited_len(value_len(v))
}

/// Each attribute as a KeyValue in field `number` of its message.
fn put_attributes(out: &mut Vec<u8>, number: u32, attrs: &[Attribute]) {
    for kv in attrs {
        put_delimited(out, number, key_value_len(kv));
        put_bytes(out, 1, &kv.0);
        put_delimited(out, 2, value_len(&kv.1));
        put_value(out, &kv.1);
    }
}

fn attributes_len(attrs: &[Attribute]) -> usize {
    attrs
        .iter()
        .map(|kv| delimited_len(key_value_len(kv)))
        .sum()
}

fn event_len(e: &Event) -> usize {
    9 + delimited_len(e.name.len()) + attributes_len(&e.attributes)
}

fn status_len(s: &Span) -> usize {
    if s.status_code == 0 {
        return 0;
    }
    let message = if s.status_message.is_empty() {
        0
    } else {
        delimited_len(s.status_message.len())
    };
    message + 1 + varint_len(u64::from(s.status_code))
}

fn span_len(s: &Span) -> usize {
    let mut n = 18 + 10; // trace id, span id
    if !s.trace_state.is_empty() {
        n += delimited_len(s.trace_state.len());
    }
    if s.parent.is_some() {
        n += 10;
    }
    n += delimited_len(s.name.len());
    n += 1 + varint_len(u64::from(s.kind));
    n += 9 + 9; // start, end
    n += attributes_len(&s.attributes);
    n += s
        .events
        .iter()
        .map(|e| delimited_len(event_len(e)))
        .sum::<usize>();
    n += delimited_len(status_len(s));
    n + 2 + 4 // flags: a two-byte tag (field 16), fixed32
}

/// Appends `span` to `out` as field 2 of a `ScopeSpans` message: trace_id 1, span_id 2, trace_state 3,
/// parent_span_id 4, name 5, kind 6, start 7, end 8, attributes 9, events 11, status 15 (always present,
/// empty when unset), flags 16.
pub fn write_span(out: &mut Vec<u8>, s: &Span) {
    let len = span_len(s);
    out.reserve(len + 4);
    put_delimited(out, 2, len);
    let start = out.len();
    put_bytes(out, 1, &s.trace_id);
    put_bytes(out, 2, &s.span_id);
    if !s.trace_state.is_empty() {
        put_bytes(out, 3, &s.trace_state);
    }
    let mut flags = HAS_IS_REMOTE;
    if let Some((id, remote)) = &s.parent {
        put_bytes(out, 4, id);
        if *remote {
            flags |= IS_REMOTE;
        }
    }
    put_bytes(out, 5, &s.name);
    out.push(0x30);
    put_varint(out, u64::from(s.kind));
    out.push(0x39);
    out.extend_from_slice(&s.start_ns.to_le_bytes());
    out.push(0x41);
    out.extend_from_slice(&s.end_ns.to_le_bytes());
    put_attributes(out, 9, &s.attributes);
    for e in &s.events {
        put_delimited(out, 11, event_len(e));
        out.push(0x09);
        out.extend_from_slice(&e.time_ns.to_le_bytes());
        put_bytes(out, 2, &e.name);
        put_attributes(out, 3, &e.attributes);
    }
    put_delimited(out, 15, status_len(s));
    if s.status_code != 0 {
        if !s.status_message.is_empty() {
            put_bytes(out, 2, &s.status_message);
        }
        out.push(0x18);
        put_varint(out, u64::from(s.status_code));
    }
    out.extend_from_slice(&[0x85, 0x01]);
    out.extend_from_slice(&flags.to_le_bytes());
    debug_assert_eq!(out.len() - start, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            trace_state: b"k=v".to_vec(),
            parent: Some(([1; 8], true)),
            name: "chat gpt-4o".into(),
            kind: 3,
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_002_500_000_000,
            attributes: vec![
                (b"s".to_vec(), Value::Str("模型".into())),
                (b"b".to_vec(), Value::Bool(true)),
                (b"i".to_vec(), Value::Int((-5i64) as u64)),
                (b"d".to_vec(), Value::Double(0.25)),
                (
                    b"a".to_vec(),
                    Value::Array(vec![Value::Str(b"stop".to_vec()), Value::Int(300)]),
                ),
            ],
            events: vec![Event {
                time_ns: 7,
                name: b"llmtally.prompt".to_vec(),
                attributes: vec![(b"llmtally.truncated".to_vec(), Value::Bool(false))],
            }],
            status_code: 2,
            status_message: b"429".to_vec(),
        }
    }

    #[test]
    fn the_length_prefix_is_the_length_written() {
        for s in [span(), Span::default()] {
            let mut out = vec![];
            write_span(&mut out, &s);
            assert_eq!(out[0], 0x12);
            let n = span_len(&s);
            let prefix = 1 + varint_len(n as u64);
            assert_eq!(out.len(), prefix + n);
        }
    }

    #[test]
    fn an_unset_status_is_an_empty_message_and_flags_say_local_or_remote() {
        let mut s = Span {
            name: b"x".to_vec(),
            kind: 3,
            ..Span::default()
        };
        let mut out = vec![];
        write_span(&mut out, &s);
        let tail = &out[out.len() - 8..];
        assert_eq!(tail, &[0x7a, 0x00, 0x85, 0x01, 0x00, 0x01, 0x00, 0x00]);
        s.parent = Some(([2; 8], true));
        out.clear();
        write_span(&mut out, &s);
        assert_eq!(&out[out.len() - 4..], &[0x00, 0x03, 0x00, 0x00]);
    }

    #[test]
    fn values_are_written_as_any_value() {
        let mut out = vec![];
        put_value(&mut out, &Value::Int((-1i64) as u64));
        assert_eq!(
            out,
            [0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        out.clear();
        put_value(
            &mut out,
            &Value::Array(vec![Value::Bool(false), Value::Str(b"a".to_vec())]),
        );
        assert_eq!(
            out,
            [0x2a, 0x09, 0x0a, 0x02, 0x10, 0x00, 0x0a, 0x03, 0x0a, 0x01, b'a']
        );
    }
}
