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
//! The response id: `message.id` of `message_start`, or the body's `id`;
//! the finish reason: `message_delta.delta.stop_reason`, or the body's
//! `stop_reason`.
//!
//! Text for counting: `content_block_delta` events' `delta.text`,
//! `delta.thinking` and `delta.partial_json`, and tool names from
//! `content_block_start`, each content block (`index`) its own text.

use super::openai::{ERROR_OBJ, TEXT_OR_BLOCKS};
use crate::descriptor::{Cond, Descriptor, Framing, ModelEnd, PathModel};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj, Or, Raw};
use crate::usage::Arithmetic;

/// Server-side sampling steps (compaction, advisor, fallback): billed as
/// the sum of every step, which replaces the top-level numbers.
pub(crate) const ITERATION: Pat = Obj(
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
pub(crate) const MESSAGE: Pat = Obj(
    None,
    &[
        ("id", Leaf(RESPONSE_ID)),
        ("model", Leaf(MODEL)),
        ("usage", USAGE),
    ],
);

/// `delta` of a content block (Anthropic), union with Bedrock Converse's.
pub(crate) const DELTA: Pat = Obj(
    None,
    &[
        ("text", Leaf(T_CONTENT)),
        ("thinking", Leaf(T_REASONING)),
        ("partial_json", Leaf(T_TOOL_ARGS)),
        // compaction_delta: the summary of a server-side compaction step
        ("content", Leaf(T_CONTENT)),
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
        // the non-streaming message's id (streams: `message_start.message.id`)
        ("id", Leaf(RESPONSE_ID)),
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

/// `source` of an image or document block: base64 `data`, a `url` or a
/// `file_id`, whose kind `media_type` (or the block's `type`) tells; a
/// `content` source holds text blocks.
const SOURCE: Pat = Obj(
    None,
    &[
        ("media_type", Leaf(R_KIND)),
        ("data", Leaf(R_MEDIA)),
        ("url", Leaf(R_MEDIA)),
        ("file_id", Leaf(R_MEDIA)),
        ("content", TEXT_OR_BLOCKS),
    ],
);

/// Bedrock Converse media: `{"format", "source": {"bytes" | "s3Location"}}`.
const CONVERSE_IMAGE: Pat = Obj(
    None,
    &[(
        "source",
        Obj(
            None,
            &[
                ("bytes", Leaf(R_IMAGE)),
                ("s3Location", Obj(None, &[("uri", Leaf(R_IMAGE))])),
            ],
        ),
    )],
);
const CONVERSE_DOCUMENT: Pat = Obj(
    None,
    &[(
        "source",
        Obj(
            None,
            &[
                ("bytes", Leaf(R_FILE)),
                ("s3Location", Obj(None, &[("uri", Leaf(R_FILE))])),
                ("text", Leaf(R_TEXT)),
            ],
        ),
    )],
);
const CONVERSE_VIDEO: Pat = Obj(
    None,
    &[(
        "source",
        Obj(
            None,
            &[
                ("bytes", Leaf(R_VIDEO)),
                ("s3Location", Obj(None, &[("uri", Leaf(R_VIDEO))])),
            ],
        ),
    )],
);

/// A block inside a tool result: text, an image or a document (Converse:
/// also `json`).
const RESULT_BLOCK: Pat = Obj(
    Some(R_PART_ANTHROPIC),
    &[
        ("type", Leaf(R_KIND)),
        ("text", Leaf(R_TEXT)),
        ("source", SOURCE),
        ("json", Raw(R_TEXT)),
        ("image", CONVERSE_IMAGE),
        ("document", CONVERSE_DOCUMENT),
        ("video", CONVERSE_VIDEO),
    ],
);

/// A message's content block (Messages, and Converse's keyed blocks): text,
/// images and documents, tool uses (name and input), tool results.
const BLOCK: Pat = Obj(
    Some(R_PART_ANTHROPIC),
    &[
        ("type", Leaf(R_KIND)),
        ("text", Leaf(R_TEXT)),
        ("source", SOURCE),
        ("content", Or(&[Leaf(R_TEXT), Arr(&RESULT_BLOCK)])),
        ("name", Leaf(R_TEXT)),
        ("input", Raw(R_TEXT)),
        ("image", CONVERSE_IMAGE),
        ("document", CONVERSE_DOCUMENT),
        ("video", CONVERSE_VIDEO),
        (
            "toolUse",
            Obj(None, &[("name", Leaf(R_TEXT)), ("input", Raw(R_TEXT))]),
        ),
        ("toolResult", Obj(None, &[("content", Arr(&RESULT_BLOCK))])),
    ],
);

/// A structured-output format: `{"type": "json_schema", "schema": {...}}`.
const OUTPUT_FORMAT: Pat = Obj(None, &[("schema", Raw(R_TEXT))]);

/// Messages requests (also Bedrock Converse and InvokeModel's Anthropic
/// body): `system`, the content blocks of `messages`, tool definitions
/// (Messages `tools`, Converse `toolConfig.tools[].toolSpec`) and
/// structured-output schemas; the output limit `max_tokens` (also the
/// Cohere and Mistral InvokeModel bodies'), Converse's and Nova's
/// `inferenceConfig.maxTokens`, Llama's `max_gen_len`, Titan's
/// `textGenerationConfig.maxTokenCount`.
pub(crate) static REQUEST: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("max_tokens", Raw(R_MAX_OUTPUT)),
        (
            "inferenceConfig",
            Obj(None, &[("maxTokens", Raw(R_MAX_OUTPUT))]),
        ),
        // Bedrock InvokeModel bodies of other families
        ("max_gen_len", Raw(R_MAX_OUTPUT)),
        (
            "textGenerationConfig",
            Obj(None, &[("maxTokenCount", Raw(R_MAX_OUTPUT))]),
        ),
        ("system", TEXT_OR_BLOCKS),
        // Bedrock InvokeModel prompts of other families: Titan `inputText`; Llama, Mistral and DeepSeek
        // `prompt` (also Anthropic's legacy Text Completions); Cohere Command R `message`, `preamble`
        // and `chat_history`
        ("inputText", Leaf(R_TEXT)),
        ("prompt", Leaf(R_TEXT)),
        ("message", Leaf(R_TEXT)),
        ("preamble", Leaf(R_TEXT)),
        (
            "chat_history",
            Arr(&Obj(None, &[("message", Leaf(R_TEXT))])),
        ),
        (
            "messages",
            Arr(&Obj(None, &[("content", Or(&[Leaf(R_TEXT), Arr(&BLOCK)]))])),
        ),
        (
            "tools",
            Arr(&Obj(
                Some(R_TOOL_ANTHROPIC),
                &[
                    ("name", Leaf(R_TEXT)),
                    ("description", Leaf(R_TEXT)),
                    ("input_schema", Raw(R_TEXT)),
                ],
            )),
        ),
        ("output_format", OUTPUT_FORMAT),
        ("output_config", Obj(None, &[("format", OUTPUT_FORMAT)])),
        (
            "toolConfig",
            Obj(
                None,
                &[(
                    "tools",
                    Arr(&Obj(
                        None,
                        &[(
                            "toolSpec",
                            Obj(
                                Some(R_TOOL),
                                &[
                                    ("name", Leaf(R_TEXT)),
                                    ("description", Leaf(R_TEXT)),
                                    ("inputSchema", Obj(None, &[("json", Raw(R_TEXT))])),
                                ],
                            ),
                        )],
                    )),
                )],
            ),
        ),
    ],
);

pub static ANTHROPIC: Descriptor = Descriptor {
    id: "anthropic",
    display: "Anthropic",
    // Claude on Vertex AI: `.../publishers/anthropic/models/{model}:rawPredict` (or `:streamRawPredict`)
    detect: &[
        &[Cond::PathEndsWith("/messages")],
        &[Cond::PathContains("/publishers/anthropic/")],
    ],
    request: &REQUEST,
    response: &RESPONSE,
    response_array: &RESPONSE_ARRAY,
    inner: None,
    arithmetic: Arithmetic::PROMPT_ADDS_CACHE,
    brace_framing: Framing::Json,
    nul_framing: None,
    // Claude on Vertex AI names the model in the path only (`.../models/claude-...@date:rawPredict`)
    path_model: Some(PathModel {
        after: "/publishers/anthropic/models/",
        last: false,
        end: ModelEnd::Char(':'),
        percent_decoded: true,
    }),
    streams_by_path: &[],
    usage_headers: &[],
    // the body: `stop_sequence` is a key no OpenAI-compatible response has
    body_markers: &[
        "\"message_start\"",
        "\"content_block_delta\"",
        "\"stop_sequence\"",
    ],
};
