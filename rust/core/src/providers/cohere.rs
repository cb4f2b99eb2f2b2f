//! Cohere: Chat v2 (`/v2/chat`, SSE events `message-start` ...
//! `content-delta` ... `message-end`), Chat v1 (`/v1/chat`, NDJSON
//! `application/stream+json` ending in `stream-end`), and Embed (`/v{1,2}/embed`).
//!
//! Cohere bills `billed_units` (`input_tokens`, `output_tokens`), which
//! leave out the prompt template, the system prompt and cached tokens; the raw
//! `tokens` and `cached_tokens` beside them are not what is charged and are
//! not read. Usage arrives only at the end (`message-end`'s `delta.usage`,
//! the body's `usage`, v1 `stream-end`'s `response.meta`, embed's `meta`): a
//! stream cut before it is counted by the tokenizer. Text for counting:
//! content deltas (a reasoning model's `thinking` as reasoning), the tool
//! plan, tool call names and arguments. The
//! response id: `id` (v2, embed), v1's `generation_id`; the finish reason:
//! `message-end`'s `delta.finish_reason`, the body's (and v1's) `finish_reason`.

use super::openai::{compatible, PART};
use crate::descriptor::{Cond, Descriptor};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj, Or, Raw};

const BILLED: Pat = Obj(
    None,
    &[(
        "billed_units",
        Obj(
            None,
            &[
                ("input_tokens", Leaf(INPUT)),
                ("output_tokens", Leaf(OUTPUT)),
            ],
        ),
    )],
);

/// A content block: its text, or a reasoning model's `thinking`.
const TEXT: Pat = Obj(
    None,
    &[("text", Leaf(T_CONTENT)), ("thinking", Leaf(T_REASONING))],
);
const FUNCTION: Pat = Obj(
    None,
    &[(
        "function",
        Obj(
            None,
            &[
                ("name", Leaf(T_TOOL_NAME)),
                ("arguments", Leaf(T_TOOL_ARGS)),
            ],
        ),
    )],
);

/// A message: its content and tool calls are objects in stream deltas, arrays in bodies.
const MESSAGE: Pat = Obj(
    None,
    &[
        ("content", Or(&[TEXT, Arr(&TEXT)])),
        ("tool_plan", Leaf(T_PLAN)),
        ("tool_calls", Or(&[FUNCTION, Arr(&FUNCTION)])),
    ],
);

static RESPONSE: Pat = Obj(
    Some(ROOT),
    &[
        // v2 bodies, `message-start` and embed; v1 bodies and `stream-start`
        ("id", Leaf(RESPONSE_ID)),
        ("generation_id", Leaf(RESPONSE_ID)),
        ("index", Leaf(CHOICE_INDEX)),
        (
            "delta",
            Obj(
                None,
                &[
                    ("message", MESSAGE),
                    ("finish_reason", Leaf(FINISH)),
                    ("usage", BILLED),
                ],
            ),
        ),
        ("message", MESSAGE),
        ("finish_reason", Leaf(FINISH)),
        ("usage", BILLED),
        // v1 and embed
        ("meta", BILLED),
        ("response", Obj(None, &[("meta", BILLED)])),
        ("text", Leaf(T_CONTENT)),
        ("is_finished", Leaf(FINISH)),
    ],
);
static RESPONSE_ARRAY: Pat = Arr(&RESPONSE);

/// v2 `messages[].content` (a string or parts, images as OpenAI's), v1
/// `message`, `preamble` and `chat_history[].message`, embed `texts`; tools
/// (v2 in OpenAI's shape, v1 `parameter_definitions`) and v2
/// `response_format.json_schema` (the schema itself); the output limit
/// `max_tokens` (v2 and v1).
static REQUEST: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("max_tokens", Raw(R_MAX_OUTPUT)),
        (
            "messages",
            Arr(&Obj(None, &[("content", Or(&[Leaf(R_TEXT), Arr(&PART)]))])),
        ),
        ("message", Leaf(R_TEXT)),
        ("preamble", Leaf(R_TEXT)),
        (
            "chat_history",
            Arr(&Obj(None, &[("message", Leaf(R_TEXT))])),
        ),
        ("texts", Arr(&Leaf(R_TEXT))),
        (
            "tools",
            Arr(&Obj(
                Some(R_TOOL),
                &[
                    (
                        "function",
                        Obj(
                            None,
                            &[
                                ("name", Leaf(R_TEXT)),
                                ("description", Leaf(R_TEXT)),
                                ("parameters", Raw(R_TEXT)),
                            ],
                        ),
                    ),
                    ("name", Leaf(R_TEXT)),
                    ("description", Leaf(R_TEXT)),
                    ("parameter_definitions", Raw(R_TEXT)),
                ],
            )),
        ),
        (
            "response_format",
            Obj(None, &[("json_schema", Raw(R_TEXT))]),
        ),
    ],
);

pub static COHERE: Descriptor = Descriptor {
    request: &REQUEST,
    response: &RESPONSE,
    response_array: &RESPONSE_ARRAY,
    body_markers: &[
        "\"billed_units\"",
        "\"message-start\"",
        "\"content-delta\"",
        "\"stream-start\"",
    ],
    ..compatible(
        "cohere",
        "Cohere",
        &[
            &[Cond::PathEndsWith("/v2/chat")],
            &[Cond::PathEndsWith("/v1/chat")],
            &[Cond::PathEndsWith("/v2/embed")],
            &[Cond::PathEndsWith("/v1/embed")],
        ],
    )
};
