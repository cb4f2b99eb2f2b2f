//! Anthropic Messages.
//!
//! Streaming: `message_start.message.usage` carries the input side,
//! `message_delta.usage` a cumulative `output_tokens` (newer API versions
//! repeat the input fields there too); the latest value of each field wins.
//! Non-streaming: `usage` at the top level. `input_tokens` excludes cache
//! reads and writes, which are added to make `prompt_tokens`.

use super::openai::ERROR_OBJ;
use super::Format;
use crate::json::Pat::{self, Arr, Leaf, Obj};
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

static DOC: Pat = Obj(
    None,
    &[("model", Leaf(MODEL)), ("usage", USAGE), ("message", MESSAGE), ("error", ERROR_OBJ)],
);
static ARRAY: Pat = Arr(&DOC);

pub static FORMAT: Format = Format {
    pat: &DOC,
    array: &ARRAY,
    inner: None,
    prompt_adds_cache: true,
    completion_adds_reasoning: false,
};
