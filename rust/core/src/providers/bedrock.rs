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
//! Bedrock's input counts exclude cache reads and writes: they are added.
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
    None,
    &[
        ("inputTokens", Leaf(INPUT)),
        ("outputTokens", Leaf(OUTPUT)),
        ("totalTokens", Leaf(TOTAL)),
        ("cacheReadInputTokens", Leaf(CACHED)),
        ("cacheWriteInputTokens", Leaf(CACHE_WRITE)),
        ("input_tokens", Leaf(INPUT)),
        ("output_tokens", Leaf(OUTPUT)),
        ("cache_read_input_tokens", Leaf(CACHED)),
        ("cache_creation_input_tokens", Leaf(CACHE_WRITE)),
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

/// A model's own event or body (inside a chunk, or an InvokeModel body).
static INNER: Pat = Obj(
    Some(ROOT),
    &[
        ("index", Leaf(CHOICE_INDEX)),
        ("delta", anthropic::DELTA),
        ("content_block", anthropic::BLOCK_START),
        ("model", Leaf(MODEL)),
        ("usage", USAGE),
        ("message", anthropic::MESSAGE),
        ("amazon-bedrock-invocationMetrics", METRICS),
        ("prompt_token_count", Leaf(INPUT)),
        ("generation_token_count", Leaf(OUTPUT)),
        ("error", ERROR_OBJ),
    ],
);

static RESPONSE: Pat = Obj(
    Some(ROOT),
    &[
        ("bytes", Leaf(BYTES)),
        ("contentBlockIndex", Leaf(CHOICE_INDEX)),
        ("index", Leaf(CHOICE_INDEX)),
        ("delta", anthropic::DELTA),
        (
            "start",
            Obj(
                None,
                &[("toolUse", Obj(None, &[("name", Leaf(T_TOOL_NAME))]))],
            ),
        ),
        ("content_block", anthropic::BLOCK_START),
        ("usage", USAGE),
        ("metadata", Obj(None, &[("usage", USAGE)])),
        ("model", Leaf(MODEL)),
        ("message", anthropic::MESSAGE),
        ("amazon-bedrock-invocationMetrics", METRICS),
        ("prompt_token_count", Leaf(INPUT)),
        ("generation_token_count", Leaf(OUTPUT)),
        ("error", ERROR_OBJ),
    ],
);
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
};
