//! Ollama native API: `/api/chat` and `/api/generate`, NDJSON when
//! streaming (the default), one JSON object otherwise. The final object has
//! `"done": true` with `prompt_eval_count` and `eval_count`. Ollama's
//! OpenAI-compatible endpoints (`/v1/...`) carry OpenAI's `usage`, which is
//! read too. Text for counting: `message.content`, `message.thinking`
//! (chat), `response`, `thinking` (generate).

use super::openai::ERROR_OBJ;
use crate::json::Pat::{self, Arr, Leaf, Obj};
use crate::usage::field::*;

static DOC: Pat = Obj(
    Some(ROOT),
    &[
        (
            "message",
            Obj(
                None,
                &[
                    ("content", Leaf(T_CONTENT)),
                    ("thinking", Leaf(T_REASONING)),
                ],
            ),
        ),
        ("response", Leaf(T_CONTENT)),
        ("choices", Arr(&super::openai::CHOICE_OBJ)),
        ("thinking", Leaf(T_REASONING)),
        ("model", Leaf(MODEL)),
        ("prompt_eval_count", Leaf(INPUT)),
        ("eval_count", Leaf(OUTPUT)),
        (
            "usage",
            Obj(
                None,
                &[
                    ("prompt_tokens", Leaf(INPUT)),
                    ("completion_tokens", Leaf(OUTPUT)),
                    ("total_tokens", Leaf(TOTAL)),
                ],
            ),
        ),
        ("error", ERROR_OBJ),
    ],
);
declare_format!(inner: None, prompt_adds_cache: false, completion_adds_reasoning: false);
