//! OpenAI chat completions (and every OpenAI-compatible server).
//!
//! `usage` sits at the top level of the non-streaming body and of the
//! streaming usage chunk (sent with `stream_options.include_usage`).
//! `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`;
//! `completion_tokens` already includes the reasoning tokens.

use super::Format;
use crate::json::Pat::{self, Leaf, Obj};
use crate::usage::field::*;

const USAGE: Pat = Obj(
    None,
    &[
        ("prompt_tokens", Leaf(INPUT)),
        ("completion_tokens", Leaf(OUTPUT)),
        ("total_tokens", Leaf(TOTAL)),
        ("prompt_tokens_details", Obj(None, &[("cached_tokens", Leaf(CACHED))])),
        ("completion_tokens_details", Obj(None, &[("reasoning_tokens", Leaf(REASONING))])),
    ],
);

static CHAT: Pat = Obj(None, &[("model", Leaf(MODEL)), ("usage", USAGE), ("error", Obj(Some(ERROR), &[]))]);

pub static FORMAT: Format = Format { pat: &CHAT, prompt_adds_cache: false };
