//! AWS event-stream framing: no panic, the same messages and counters under any split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmtally_core::EventStream;

#[path = "split.rs"]
mod split;

fn run(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, llmtally_core::EventStreamCounters) {
    let mut es = EventStream::new(512);
    let mut got = Vec::new();
    for p in pieces {
        es.feed(p, &mut |m| {
            let mut v = m.event_type.to_vec();
            v.extend_from_slice(m.message_type);
            v.extend_from_slice(m.payload);
            got.push(v);
        });
    }
    (got, es.counters.clone())
}

fuzz_target!(|input: &[u8]| {
    let n = input.first().map_or(0, |&b| b as usize % (input.len().max(1)));
    let (cuts, body) = input.split_at(n.min(input.len()));
    assert_eq!(run(&[body]), run(&split::pieces(body, cuts)));
});
