//! Anthropic Messages.
//!
//! Streaming: `message_start.message.usage` carries the input side,
//! `message_delta.usage` a cumulative `output_tokens` (newer API versions
//! repeat the input fields there too); the latest value of each field wins.
//! Non-streaming: `usage` at the top level. `input_tokens` excludes cache
//! reads and writes, which are added to make `prompt_tokens`.
//!
//! Text for counting: `content_block_delta` events' `delta.text`,
//! `delta.thinking` and `delta.partial_json`, and tool names from
//! `content_block_start`, each content block (`index`) its own text.

use super::openai::ERROR_OBJ;
use crate::json::Pat::{self, Leaf, Obj};
use crate::usage::field::*;

pub(crate) const USAGE: Pat = Obj(
    None,
    &[
        ("input_tokens", Leaf(INPUT)),
        ("output_tokens", Leaf(OUTPUT)),
        ("cache_read_input_tokens", Leaf(CACHED)),
        ("cache_creation_input_tokens", Leaf(CACHE_WRITE)),
    ],
);

pub(crate) const MESSAGE: Pat = Obj(None, &[("model", Leaf(MODEL)), ("usage", USAGE)]);

/// `delta` of a content block (Anthropic), union with Bedrock Converse's.
pub(crate) const DELTA: Pat = Obj(
    None,
    &[
        ("text", Leaf(T_CONTENT)),
        ("thinking", Leaf(T_REASONING)),
        ("partial_json", Leaf(T_TOOL_ARGS)),
        ("toolUse", Obj(None, &[("input", Leaf(T_TOOL_ARGS))])),
        (
            "reasoningContent",
            Obj(None, &[("text", Leaf(T_REASONING))]),
        ),
    ],
);

pub(crate) const BLOCK_START: Pat = Obj(None, &[("name", Leaf(T_TOOL_NAME))]);

static DOC: Pat = Obj(
    Some(ROOT),
    &[
        ("model", Leaf(MODEL)),
        ("usage", USAGE),
        ("message", MESSAGE),
        ("error", ERROR_OBJ),
        ("index", Leaf(CHOICE_INDEX)),
        ("delta", DELTA),
        ("content_block", BLOCK_START),
    ],
);
declare_format!(inner: None, prompt_adds_cache: true, completion_adds_reasoning: false);
