//! OpenAI and every OpenAI-compatible server (Azure, Mistral, vLLM, ...).
//!
//! - Chat Completions and legacy completions: `usage` at the top level of the
//!   body, of the streaming usage chunk (`stream_options.include_usage`), of
//!   Mistral's last content chunk, or of every chunk (vLLM
//!   `continuous_usage_stats`, cumulative: the latest wins).
//! - Responses API: `response.usage` in `response.completed`,
//!   `response.incomplete` and `response.failed` events, or `usage` at the
//!   top of the non-streaming body, with `input_tokens`/`output_tokens`.
//! - Vendor fields (see docs/providers.md): Moonshot's `choices[].usage` and
//!   `usage.cached_tokens`, Groq's `x_groq.usage`, DeepSeek's
//!   `prompt_cache_hit_tokens`, OpenRouter's `cache_write_tokens`, llama.cpp's
//!   `timings` (`prompt_n + cache_n` input, `cache_n` cached, `predicted_n` output)
//!   when no `usage` is reported.
//! - Embeddings: `usage.prompt_tokens` and `total_tokens`; the (large)
//!   `data` array is skipped.
//!
//! - The response id: the top-level `id` (Chat Completions and every
//!   compatible server, legacy completions, the non-streaming Responses
//!   body), or `response.id` in Responses events. Finish reasons:
//!   `choices[].finish_reason`, and the Responses API's
//!   `incomplete_details.reason`.
//!
//! `prompt_tokens`/`input_tokens` already include the cached tokens, and
//! `completion_tokens`/`output_tokens` the reasoning tokens.
//!
//! Text for counting streams without usage: `choices[].delta` (or
//! `.message`) `content` (a string, or Mistral's typed parts: `text`, and
//! `thinking` as reasoning), `refusal`, `reasoning_content`, tool call
//! `function.name` and `function.arguments`, legacy `choices[].text`, and
//! the Responses API's `delta` strings keyed by `output_index`/`content_index`.

use crate::descriptor::{Descriptor, Framing};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj, Or, Raw};
use crate::usage::Arithmetic;

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
            Obj(
                None,
                &[
                    ("cached_tokens", Leaf(CACHED)),
                    // OpenRouter
                    ("cache_write_tokens", Leaf(CACHE_WRITE)),
                ],
            ),
        ),
        // DeepSeek: the same number as prompt_tokens_details.cached_tokens
        ("prompt_cache_hit_tokens", Leaf(CACHED)),
        // Moonshot (Kimi)
        ("cached_tokens", Leaf(CACHED)),
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

/// Mistral's reasoning models (Magistral): `content` as typed parts, `text`
/// or `thinking` (itself a string or `[{"text": ...}]`).
const CONTENT_PART: Pat = Obj(
    None,
    &[
        ("text", Leaf(T_CONTENT)),
        (
            "thinking",
            Or(&[
                Leaf(T_REASONING),
                Arr(&Obj(None, &[("text", Leaf(T_REASONING))])),
            ]),
        ),
    ],
);

const MESSAGE: Pat = Obj(
    None,
    &[
        ("content", Or(&[Leaf(T_CONTENT), Arr(&CONTENT_PART)])),
        ("refusal", Leaf(T_REFUSAL)),
        // DeepSeek, xAI, llama.cpp, Fireworks, older vLLM
        ("reasoning_content", Leaf(T_REASONING)),
        // Groq, OpenRouter, Cerebras, Ollama's /v1, vLLM since 2026 (some send
        // it beside reasoning_content with the same text: counted once)
        ("reasoning", Leaf(T_REASONING_ALT)),
        // OpenRouter, beside `reasoning`: `text` or `summary` (`data` is encrypted)
        (
            "reasoning_details",
            Arr(&Obj(
                None,
                &[
                    ("text", Leaf(T_REASONING_DETAIL)),
                    ("summary", Leaf(T_REASONING_DETAIL)),
                ],
            )),
        ),
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
        ("finish_reason", Leaf(FINISH)),
        // Moonshot (Kimi): the stream's usage in its finish chunk's choice
        ("usage", USAGE),
    ],
);

/// The Responses API's reason for stopping short (`max_output_tokens`,
/// `content_filter`): its only finish reason (a completed response has none).
const INCOMPLETE: Pat = Obj(None, &[("reason", Leaf(FINISH))]);

pub(crate) static RESPONSE: Pat = Obj(
    Some(ROOT),
    &[
        // chatcmpl-... (chunks repeat it), cmpl-..., resp_... (non-streaming Responses)
        ("id", Leaf(RESPONSE_ID)),
        ("model", Leaf(MODEL)),
        ("usage", USAGE),
        // Groq: stream usage in the last chunk's `x_groq` (for some models only there)
        ("x_groq", Obj(None, &[("usage", USAGE)])),
        // llama.cpp's server: its own counts, used when no usage is reported
        (
            "timings",
            Obj(
                None,
                &[
                    ("prompt_n", Leaf(ALT_INPUT)),
                    ("cache_n", Leaf(ALT_CACHED)),
                    ("predicted_n", Leaf(ALT_OUTPUT)),
                ],
            ),
        ),
        ("error", ERROR_OBJ),
        // Responses API events: usage only in the final ones (completed,
        // incomplete, failed), which makes it final
        (
            "response",
            Obj(
                Some(FINAL),
                &[
                    ("id", Leaf(RESPONSE_ID)),
                    ("model", Leaf(MODEL)),
                    ("usage", USAGE),
                    ("error", ERROR_OBJ),
                    ("incomplete_details", INCOMPLETE),
                ],
            ),
        ),
        ("choices", Arr(&CHOICE_OBJ)),
        ("incomplete_details", INCOMPLETE),
        ("output_index", Leaf(CHOICE_INDEX)),
        ("content_index", Leaf(TOOL_INDEX)),
        ("delta", Leaf(T_CONTENT)),
    ],
);
static RESPONSE_ARRAY: Pat = Arr(&RESPONSE);

const STREAM_OPTIONS: Pat = Obj(None, &[("include_usage", Leaf(INCLUDE_USAGE))]);
/// `[{"text": ...}]` content blocks or parts (images and other kinds are not counted).
pub(crate) const TEXT_BLOCKS: Pat = Arr(&Obj(None, &[("text", Leaf(R_TEXT))]));
pub(crate) const TEXT_OR_BLOCKS: Pat = Or(&[Leaf(R_TEXT), TEXT_BLOCKS]);

/// `image_url`: a URL or data URL (Responses `input_image`), or `{url, detail}`
/// (Chat Completions).
const IMAGE_URL: Pat = Or(&[
    Leaf(R_IMAGE),
    Obj(None, &[("url", Leaf(R_IMAGE)), ("detail", Leaf(R_DETAIL))]),
]);

/// A content part of Chat Completions or Responses: its text, and the media
/// OpenAI bills: images (by `detail` and size), `input_audio`, files
/// (`file` in Chat Completions, `input_file` in Responses; a Responses
/// `file_id` is an image or a file as its `type` says).
pub(crate) const PART: Pat = Obj(
    Some(R_PART_OPENAI),
    &[
        ("type", Leaf(R_KIND)),
        ("text", Leaf(R_TEXT)),
        ("image_url", IMAGE_URL),
        ("detail", Leaf(R_DETAIL)),
        ("input_audio", Obj(None, &[("data", Leaf(R_AUDIO))])),
        (
            "file",
            Obj(
                None,
                &[("file_data", Leaf(R_FILE)), ("file_id", Leaf(R_FILE))],
            ),
        ),
        ("file_id", Leaf(R_MEDIA)),
        ("file_data", Leaf(R_FILE)),
        ("file_url", Leaf(R_FILE)),
    ],
);
const CONTENT: Pat = Or(&[Leaf(R_TEXT), Arr(&PART)]);

/// A tool definition: Chat Completions' `{"type": "function", "function":
/// {name, description, parameters}}`, the Responses API's flat form, a legacy
/// `functions[]` entry; built-in tools (`web_search`...) count the overhead only.
pub(crate) const TOOL_DEF: Pat = Obj(
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
        ("parameters", Raw(R_TEXT)),
    ],
);

/// A structured-output schema: Chat Completions' `response_format.json_schema`,
/// Responses' `text.format`.
const JSON_SCHEMA: Pat = Obj(
    None,
    &[
        ("name", Leaf(R_TEXT)),
        ("description", Leaf(R_TEXT)),
        ("schema", Raw(R_TEXT)),
    ],
);

/// A chat message (also Responses message items).
const CHAT_MESSAGE: Pat = Obj(
    Some(R_MSG),
    &[
        ("role", Leaf(R_TEXT)),
        ("content", CONTENT),
        ("name", Leaf(R_NAME)),
        ("tool_call_id", Leaf(R_TEXT)),
        (
            "tool_calls",
            Arr(&Obj(
                None,
                &[(
                    "function",
                    Obj(None, &[("name", Leaf(R_TEXT)), ("arguments", Leaf(R_TEXT))]),
                )],
            )),
        ),
    ],
);
/// Responses `input`, completions `prompt`, embeddings `input`: a string, or
/// an array of strings, token ids, token-id arrays or message items.
const INPUT_VALUE: Pat = Or(&[
    Leaf(R_TEXT),
    Arr(&Or(&[Leaf(R_TEXT), CHAT_MESSAGE, Arr(&Leaf(R_TEXT))])),
]);

/// Chat Completions, Responses, completions and embeddings requests. The
/// output limit: Chat Completions `max_completion_tokens`, else its
/// deprecated `max_tokens` (also legacy completions'), Responses
/// `max_output_tokens`.
pub(crate) static REQUEST: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("stream_options", STREAM_OPTIONS),
        ("max_completion_tokens", Raw(R_MAX_OUTPUT)),
        ("max_output_tokens", Raw(R_MAX_OUTPUT)),
        ("max_tokens", Raw(R_MAX_OUTPUT_ALT)),
        ("messages", Arr(&CHAT_MESSAGE)),
        ("input", INPUT_VALUE),
        ("prompt", INPUT_VALUE),
        ("instructions", Leaf(R_TEXT)),
        ("tools", Arr(&TOOL_DEF)),
        ("functions", Arr(&TOOL_DEF)),
        (
            "response_format",
            Obj(None, &[("json_schema", JSON_SCHEMA)]),
        ),
        ("text", Obj(None, &[("format", JSON_SCHEMA)])),
    ],
);

/// The descriptor's shape for OpenAI-compatible servers: the same request
/// and response paths under another id.
pub(crate) const fn compatible(
    id: &'static str,
    display: &'static str,
    detect: &'static [&'static [crate::descriptor::Cond]],
) -> Descriptor {
    Descriptor {
        id,
        display,
        detect,
        request: &REQUEST,
        response: &RESPONSE,
        response_array: &RESPONSE_ARRAY,
        inner: None,
        arithmetic: Arithmetic::AS_REPORTED,
        brace_framing: Framing::Json,
        nul_framing: None,
        path_model: None,
        streams_by_path: &[],
        usage_headers: &[],
        body_markers: &[],
    }
}

/// The default for any path `auto` does not recognise, and for unknown ids.
pub static OPENAI: Descriptor = compatible("openai", "OpenAI", &[]);
