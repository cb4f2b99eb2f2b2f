//! OpenAI and every OpenAI-compatible server (Azure, Mistral, vLLM, ...).
//!
//! - Chat Completions and legacy completions: `usage` at the top level of the
//!   body, of the streaming usage chunk (`stream_options.include_usage`), of
//!   Mistral's last content chunk, or of every chunk (vLLM
//!   `continuous_usage_stats`, cumulative: the latest wins).
//! - Responses API: `response.usage` in `response.completed`,
//!   `response.incomplete` and `response.failed` events, or `usage` at the
//!   top of the non-streaming body, with `input_tokens`/`output_tokens`.
//! - Embeddings: `usage.prompt_tokens` and `total_tokens`; the (large)
//!   `data` array is skipped.
//!
//! `prompt_tokens`/`input_tokens` already include the cached tokens, and
//! `completion_tokens`/`output_tokens` the reasoning tokens.
//!
//! Text for counting streams without usage: `choices[].delta` (or
//! `.message`) `content`, `refusal`, `reasoning_content`, tool call
//! `function.name` and `function.arguments`, legacy `choices[].text`, and
//! the Responses API's `delta` strings keyed by `output_index`/`content_index`.

use crate::json::Pat::{self, Arr, Leaf, Obj};
use crate::usage::field::*;

const USAGE: Pat = Obj(
    None,
    &[
        ("prompt_tokens", Leaf(INPUT)),
        ("completion_tokens", Leaf(OUTPUT)),
        ("input_tokens", Leaf(INPUT)),
        ("output_tokens", Leaf(OUTPUT)),
        ("total_tokens", Leaf(TOTAL)),
        (
            "prompt_tokens_details",
            Obj(None, &[("cached_tokens", Leaf(CACHED))]),
        ),
        (
            "input_tokens_details",
            Obj(None, &[("cached_tokens", Leaf(CACHED))]),
        ),
        (
            "completion_tokens_details",
            Obj(None, &[("reasoning_tokens", Leaf(REASONING))]),
        ),
        (
            "output_tokens_details",
            Obj(None, &[("reasoning_tokens", Leaf(REASONING))]),
        ),
    ],
);

pub(crate) const ERROR_OBJ: Pat = Obj(Some(ERROR), &[]);

const TOOL_CALL: Pat = Obj(
    Some(TOOL),
    &[
        ("index", Leaf(TOOL_INDEX)),
        (
            "function",
            Obj(
                None,
                &[
                    ("name", Leaf(T_TOOL_NAME)),
                    ("arguments", Leaf(T_TOOL_ARGS)),
                ],
            ),
        ),
    ],
);

const MESSAGE: Pat = Obj(
    None,
    &[
        ("content", Leaf(T_CONTENT)),
        ("refusal", Leaf(T_REFUSAL)),
        ("reasoning_content", Leaf(T_REASONING)),
        ("tool_calls", Arr(&TOOL_CALL)),
    ],
);

pub(crate) const CHOICE_OBJ: Pat = Obj(
    Some(CHOICE),
    &[
        ("index", Leaf(CHOICE_INDEX)),
        ("delta", MESSAGE),
        ("message", MESSAGE),
        ("text", Leaf(T_CONTENT)),
    ],
);

static DOC: Pat = Obj(
    Some(ROOT),
    &[
        ("model", Leaf(MODEL)),
        ("usage", USAGE),
        ("error", ERROR_OBJ),
        (
            "response",
            Obj(
                None,
                &[
                    ("model", Leaf(MODEL)),
                    ("usage", USAGE),
                    ("error", ERROR_OBJ),
                ],
            ),
        ),
        ("choices", Arr(&CHOICE_OBJ)),
        ("output_index", Leaf(CHOICE_INDEX)),
        ("content_index", Leaf(TOOL_INDEX)),
        ("delta", Leaf(T_CONTENT)),
    ],
);
declare_format!(inner: None, prompt_adds_cache: false, completion_adds_reasoning: false);
