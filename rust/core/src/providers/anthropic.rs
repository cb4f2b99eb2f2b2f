//! Anthropic Messages.
//!
//! Streaming: `message_start.message.usage` carries the input side,
//! `message_delta.usage` a cumulative `output_tokens` (newer API versions
//! repeat the input fields there too); the latest value of each field wins.
//! Non-streaming: `usage` at the top level. `input_tokens` excludes cache
//! reads and writes, which are added to make `prompt_tokens`.
//! `output_tokens_details.thinking_tokens` is the reasoning part of
//! `output_tokens`. With `usage.iterations` (server-side compaction, advisor
//! and fallback steps) the bill is the sum over every iteration.
//!
//! Text for counting: `content_block_delta` events' `delta.text`,
//! `delta.thinking` and `delta.partial_json`, and tool names from
//! `content_block_start`, each content block (`index`) its own text.

use super::openai::{ERROR_OBJ, TEXT_OR_BLOCKS};
use crate::descriptor::{Cond, Descriptor, Framing};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj, Or};
use crate::usage::Arithmetic;

/// Server-side sampling steps (compaction, advisor, fallback): billed as
/// the sum of every step, which replaces the top-level numbers.
const ITERATION: Pat = Obj(
    None,
    &[
        ("input_tokens", Leaf(SUM_INPUT)),
        ("output_tokens", Leaf(SUM_OUTPUT)),
        ("cache_read_input_tokens", Leaf(SUM_CACHED)),
        ("cache_creation_input_tokens", Leaf(SUM_CACHE_WRITE)),
    ],
);

pub(crate) const USAGE: Pat = Obj(
    Some(SUM_RESET),
    &[
        ("input_tokens", Leaf(INPUT)),
        ("output_tokens", Leaf(OUTPUT)),
        ("cache_read_input_tokens", Leaf(CACHED)),
        ("cache_creation_input_tokens", Leaf(CACHE_WRITE)),
        (
            "output_tokens_details",
            Obj(None, &[("thinking_tokens", Leaf(REASONING))]),
        ),
        ("iterations", Arr(&ITERATION)),
    ],
);

/// `message_start.message`: its usage is a placeholder (`output_tokens` is
/// often 1) until `message_delta`, which carries `stop_reason`, reports the
/// final counts.
pub(crate) const MESSAGE: Pat = Obj(None, &[("model", Leaf(MODEL)), ("usage", USAGE)]);

/// `delta` of a content block (Anthropic), union with Bedrock Converse's.
pub(crate) const DELTA: Pat = Obj(
    None,
    &[
        ("text", Leaf(T_CONTENT)),
        ("thinking", Leaf(T_REASONING)),
        ("partial_json", Leaf(T_TOOL_ARGS)),
        // message_delta
        ("stop_reason", Leaf(FINISH)),
        ("toolUse", Obj(None, &[("input", Leaf(T_TOOL_ARGS))])),
        (
            "reasoningContent",
            Obj(None, &[("text", Leaf(T_REASONING))]),
        ),
    ],
);

pub(crate) const BLOCK_START: Pat = Obj(None, &[("name", Leaf(T_TOOL_NAME))]);

static RESPONSE: Pat = Obj(
    Some(ROOT),
    &[
        ("model", Leaf(MODEL)),
        ("usage", USAGE),
        ("message", MESSAGE),
        ("error", ERROR_OBJ),
        ("index", Leaf(CHOICE_INDEX)),
        ("delta", DELTA),
        ("content_block", BLOCK_START),
        ("stop_reason", Leaf(FINISH)),
    ],
);
static RESPONSE_ARRAY: Pat = Arr(&RESPONSE);

/// Messages requests (also Bedrock Converse and InvokeModel's Anthropic
/// body): `system` and every text block of `messages`, tool results included.
const BLOCK: Pat = Obj(None, &[("text", Leaf(R_TEXT)), ("content", TEXT_OR_BLOCKS)]);
pub(crate) static REQUEST: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("system", TEXT_OR_BLOCKS),
        (
            "messages",
            Arr(&Obj(None, &[("content", Or(&[Leaf(R_TEXT), Arr(&BLOCK)]))])),
        ),
    ],
);

pub static ANTHROPIC: Descriptor = Descriptor {
    id: "anthropic",
    display: "Anthropic",
    detect: &[&[Cond::PathEndsWith("/messages")]],
    request: &REQUEST,
    response: &RESPONSE,
    response_array: &RESPONSE_ARRAY,
    inner: None,
    arithmetic: Arithmetic::PROMPT_ADDS_CACHE,
    brace_framing: Framing::Json,
    nul_framing: None,
    path_model: None,
    streams_by_path: &[],
    usage_headers: &[],
    body_markers: &[
        "\"message_start\"",
        "\"content_block_delta\"",
        "\"cache_creation_input_tokens\"",
    ],
};
