//! Ollama native API: `/api/chat` and `/api/generate`, NDJSON when
//! streaming (the default), one JSON object otherwise. The final object has
//! `"done": true` with `prompt_eval_count` and `eval_count`. Ollama's
//! OpenAI-compatible endpoints (`/v1/...`) carry OpenAI's `usage`, which is
//! read too. Text for counting: `message.content`, `message.thinking`
//! (chat), `response`, `thinking` (generate). The finish reason:
//! `done_reason`; the native API has no response id.

use super::openai::ERROR_OBJ;
use crate::descriptor::{Cond, Descriptor, Framing};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj, Raw};
use crate::usage::Arithmetic;

static RESPONSE: Pat = Obj(
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
        ("done", Leaf(FINISH)),
        ("done_reason", Leaf(FINISH)),
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
static RESPONSE_ARRAY: Pat = Arr(&RESPONSE);

/// `messages[].content`, `prompt`, `system`; images (`messages[].images`,
/// generate's `images`: base64, counted by OpenAI's rules, Ollama's models
/// having none published), tools (OpenAI's shape) and a `format` schema.
/// The output limit: `options.num_predict` (negative: unlimited, read as no
/// limit), or `max_tokens` on the OpenAI-compatible `/v1` endpoints.
static REQUEST: Pat = Obj(
    Some(R_PART_OPENAI),
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("options", Obj(None, &[("num_predict", Raw(R_MAX_OUTPUT))])),
        ("max_tokens", Raw(R_MAX_OUTPUT_ALT)),
        (
            "stream_options",
            Obj(None, &[("include_usage", Leaf(INCLUDE_USAGE))]),
        ),
        (
            "messages",
            Arr(&Obj(
                Some(R_PART_OPENAI),
                &[("content", Leaf(R_TEXT)), ("images", Arr(&Leaf(R_IMAGE)))],
            )),
        ),
        ("prompt", Leaf(R_TEXT)),
        ("system", Leaf(R_TEXT)),
        ("images", Arr(&Leaf(R_IMAGE))),
        ("tools", Arr(&super::openai::TOOL_DEF)),
        ("format", Raw(R_TEXT)),
    ],
);

const CHAT: Cond = Cond::PathEndsWith("/api/chat");
const GENERATE: Cond = Cond::PathEndsWith("/api/generate");

pub static OLLAMA: Descriptor = Descriptor {
    id: "ollama",
    display: "Ollama",
    detect: &[&[CHAT], &[GENERATE]],
    request: &REQUEST,
    response: &RESPONSE,
    response_array: &RESPONSE_ARRAY,
    inner: None,
    arithmetic: Arithmetic::AS_REPORTED,
    brace_framing: Framing::Ndjson,
    nul_framing: None,
    path_model: None,
    // the native API streams unless the body says `"stream": false`
    streams_by_path: &[CHAT, GENERATE],
    usage_headers: &[],
    body_markers: &["\"eval_count\"", "\"done_reason\""],
};
