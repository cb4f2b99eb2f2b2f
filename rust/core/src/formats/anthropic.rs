//! Anthropic Messages.
//!
//! Streaming: `message_start.message.usage` carries the input side,
//! `message_delta.usage` a cumulative `output_tokens` (newer API versions
//! repeat the input fields there too); the latest value of each field wins.
//! Non-streaming: `usage` at the top level. `input_tokens` excludes cache
//! reads and writes, which are added to make `prompt_tokens`.

use super::Format;
use crate::json::Pat::{self, Leaf, Obj};
use crate::usage::field::*;

const USAGE: Pat = Obj(
    None,
    &[
        ("input_tokens", Leaf(INPUT)),
        ("output_tokens", Leaf(OUTPUT)),
        ("cache_read_input_tokens", Leaf(CACHED)),
        ("cache_creation_input_tokens", Leaf(CACHE_WRITE)),
    ],
);

static MESSAGES: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("usage", USAGE),
        ("message", Obj(None, &[("model", Leaf(MODEL)), ("usage", USAGE)])),
        ("error", Obj(Some(ERROR), &[])),
    ],
);

pub static FORMAT: Format = Format { pat: &MESSAGES, prompt_adds_cache: true };
