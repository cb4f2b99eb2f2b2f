//! Amazon Bedrock.
//!
//! - ConverseStream: the `metadata` event's payload has
//!   `usage.{inputTokens, outputTokens, totalTokens, cacheReadInputTokens,
//!   cacheWriteInputTokens}`; Converse (non-streaming) has the same `usage`.
//! - InvokeModelWithResponseStream: `chunk` events whose payload
//!   `{"bytes": "<base64>"}` wraps the model's own event (for Anthropic
//!   models, the Messages events); the last adds
//!   `amazon-bedrock-invocationMetrics.{inputTokenCount, outputTokenCount,
//!   cacheReadInputTokenCount, cacheWriteInputTokenCount}`.
//! - InvokeModel (non-streaming): the model's own body (Anthropic `usage`,
//!   Llama `prompt_token_count`/`generation_token_count`).
//!
//! - InvokeModel bodies of the other families: Titan (`inputTextTokenCount`,
//!   `results[].tokenCount`), Nova (`usage`), AI21 Jamba (OpenAI's `usage`);
//!   Cohere and Mistral bodies have no counts, and a guardrail may cut Nova's:
//!   non-streaming InvokeModel responses report the counts in headers
//!   (`x-amzn-bedrock-{input,output,cache-read-input,cache-write-input}-token-count`),
//!   read before the body.
//!
//! Bedrock's input counts exclude cache reads and writes: they are added.
//! Finish reasons: Converse `stopReason` (in `messageStop` when streaming),
//! and each model family's own (`stop_reason`, `completionReason`,
//! `finish_reason`...). The response id only where the model's body has
//! one (Anthropic's `message_start.message.id` and body `id`, Cohere's and
//! AI21's `id`); Converse has none.
//! Text for counting: ConverseStream `contentBlockDelta` (`delta.text`,
//! `delta.toolUse.input`, `delta.reasoningContent.text`, per
//! `contentBlockIndex`), tool names from `contentBlockStart`, and the
//! Anthropic deltas inside InvokeModel chunks.

use super::anthropic;
use super::openai::ERROR_OBJ;
use crate::descriptor::{Cond, Descriptor, Framing, ModelEnd, PathModel};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj};
use crate::usage::Arithmetic;

const USAGE: Pat = Obj(
    Some(SUM_RESET),
    &[
        ("inputTokens", Leaf(INPUT)),
        ("outputTokens", Leaf(OUTPUT)),
        ("totalTokens", Leaf(TOTAL)),
        ("cacheReadInputTokens", Leaf(CACHED)),
        ("cacheWriteInputTokens", Leaf(CACHE_WRITE)),
        // Nova's InvokeModel body
        ("cacheReadInputTokenCount", Leaf(CACHED)),
        ("cacheWriteInputTokenCount", Leaf(CACHE_WRITE)),
        // Anthropic's body
        ("input_tokens", Leaf(INPUT)),
        ("output_tokens", Leaf(OUTPUT)),
        ("cache_read_input_tokens", Leaf(CACHED)),
        ("cache_creation_input_tokens", Leaf(CACHE_WRITE)),
        (
            "output_tokens_details",
            Obj(None, &[("thinking_tokens", Leaf(REASONING))]),
        ),
        ("iterations", Arr(&anthropic::ITERATION)),
        // AI21 Jamba's (OpenAI-style) body
        ("prompt_tokens", Leaf(INPUT)),
        ("completion_tokens", Leaf(OUTPUT)),
        ("total_tokens", Leaf(TOTAL)),
    ],
);

const METRICS: Pat = Obj(
    None,
    &[
        ("inputTokenCount", Leaf(INPUT)),
        ("outputTokenCount", Leaf(OUTPUT)),
        ("cacheReadInputTokenCount", Leaf(CACHED)),
        ("cacheWriteInputTokenCount", Leaf(CACHE_WRITE)),
    ],
);

const TEXT_PARTS: Pat = Arr(&Obj(None, &[("text", Leaf(T_CONTENT))]));

/// The keys of every model family's body and stream events (Converse,
/// Anthropic, Titan, Llama, Nova, Mistral, Cohere, AI21), plus `$extra`.
macro_rules! model_body {
    ($($extra:expr),* $(,)?) => {
        &[
            $($extra,)*
            // InvokeModel bodies of Anthropic (`msg_bdrk_...`), Cohere and AI21
            // models; Converse has no response id
            ("id", Leaf(RESPONSE_ID)),
            ("index", Leaf(CHOICE_INDEX)),
            ("contentBlockIndex", Leaf(CHOICE_INDEX)),
            ("delta", anthropic::DELTA),
            (
                "start",
                Obj(None, &[("toolUse", Obj(None, &[("name", Leaf(T_TOOL_NAME))]))]),
            ),
            ("content_block", anthropic::BLOCK_START),
            ("usage", USAGE),
            ("metadata", Obj(None, &[("usage", USAGE)])),
            ("model", Leaf(MODEL)),
            ("message", anthropic::MESSAGE),
            ("amazon-bedrock-invocationMetrics", METRICS),
            ("stopReason", Leaf(FINISH)),
            // Converse and Nova bodies
            ("output", Obj(None, &[("message", Obj(None, &[("content", TEXT_PARTS)]))])),
            // Nova stream events
            (
                "contentBlockDelta",
                Obj(None, &[("delta", anthropic::DELTA), ("contentBlockIndex", Leaf(CHOICE_INDEX))]),
            ),
            ("messageStop", Obj(None, &[("stopReason", Leaf(FINISH))])),
            // Llama
            ("prompt_token_count", Leaf(INPUT)),
            ("generation_token_count", Leaf(OUTPUT)),
            ("generation", Leaf(T_CONTENT)),
            ("stop_reason", Leaf(FINISH)),
            // Titan
            ("inputTextTokenCount", Leaf(INPUT)),
            ("totalOutputTextTokenCount", Leaf(OUTPUT)),
            ("outputText", Leaf(T_CONTENT)),
            ("completionReason", Leaf(FINISH)),
            (
                "results",
                Arr(&Obj(
                    Some(CHOICE),
                    &[
                        ("tokenCount", Leaf(OUTPUT)),
                        ("outputText", Leaf(T_CONTENT)),
                        ("completionReason", Leaf(FINISH)),
                    ],
                )),
            ),
            // Mistral
            (
                "outputs",
                Arr(&Obj(Some(CHOICE), &[("text", Leaf(T_CONTENT)), ("stop_reason", Leaf(FINISH))])),
            ),
            // Cohere: no counts in the body (the response headers have them)
            (
                "generations",
                Arr(&Obj(Some(CHOICE), &[("text", Leaf(T_CONTENT)), ("finish_reason", Leaf(FINISH))])),
            ),
            ("text", Leaf(T_CONTENT)),
            ("is_finished", Leaf(FINISH)),
            ("finish_reason", Leaf(FINISH)),
            // AI21 Jamba
            ("choices", Arr(&super::openai::CHOICE_OBJ)),
            ("error", ERROR_OBJ),
        ]
    };
}

/// A model's own event or body, inside a chunk's base64 `bytes`.
static INNER: Pat = Obj(Some(ROOT), model_body!());

/// Event-stream payloads (ConverseStream events, InvokeModel chunks) and
/// non-streaming bodies.
static RESPONSE: Pat = Obj(Some(ROOT), model_body!(("bytes", Leaf(BYTES))));
static RESPONSE_ARRAY: Pat = Arr(&RESPONSE);

const EVENTSTREAM: Cond = Cond::ContentTypeStartsWith("application/vnd.amazon.eventstream");
const MODEL_PATH: Cond = Cond::PathContains("/model/");

pub static BEDROCK: Descriptor = Descriptor {
    id: "bedrock",
    display: "Bedrock",
    detect: &[
        &[EVENTSTREAM],
        &[MODEL_PATH, Cond::PathEndsWith("/converse")],
        &[MODEL_PATH, Cond::PathEndsWith("/converse-stream")],
        &[MODEL_PATH, Cond::PathEndsWith("/invoke")],
        &[
            MODEL_PATH,
            Cond::PathEndsWith("/invoke-with-response-stream"),
        ],
    ],
    // Converse takes the Messages shape; InvokeModel bodies are the model's own
    // (Anthropic's Messages for Claude)
    request: &anthropic::REQUEST,
    response: &RESPONSE,
    response_array: &RESPONSE_ARRAY,
    inner: Some(&INNER),
    arithmetic: Arithmetic::PROMPT_ADDS_CACHE,
    brace_framing: Framing::Json,
    nul_framing: Some(Framing::EventStream),
    // `/model/{modelId}/{operation}`, the id URL-encoded (`%3A` for `:`)
    path_model: Some(PathModel {
        after: "/model/",
        last: true,
        end: ModelEnd::LastSlash,
        percent_decoded: true,
    }),
    streams_by_path: &[
        Cond::PathEndsWith("/converse-stream"),
        Cond::PathEndsWith("/invoke-with-response-stream"),
    ],
    // non-streaming InvokeModel of every model family (streams carry none)
    usage_headers: &[
        ("x-amzn-bedrock-input-token-count", INPUT),
        ("x-amzn-bedrock-output-token-count", OUTPUT),
        ("x-amzn-bedrock-cache-read-input-token-count", CACHED),
        ("x-amzn-bedrock-cache-write-input-token-count", CACHE_WRITE),
    ],
    body_markers: &[
        "\"amazon-bedrock-invocationMetrics\"",
        "\"inputTokens\"",
        "\"inputTextTokenCount\"",
        "\"generation_token_count\"",
    ],
};
