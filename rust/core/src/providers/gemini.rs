//! Gemini API and Vertex AI: `generateContent` and `streamGenerateContent`
//! (SSE with `alt=sse`, otherwise one JSON array whose elements arrive over
//! time).
//!
//! Every chunk may carry a cumulative `usageMetadata`: the latest object
//! replaces all earlier ones. `promptTokenCount` includes the cached tokens;
//! `toolUsePromptTokenCount` is billed input too and is added to the prompt;
//! `thoughtsTokenCount` (reasoning) is not part of `candidatesTokenCount`
//! and is added to the completion. `modelVersion` is the provider's model.
//! A chunk with `finishReason` makes the usage final; before it the
//! cumulative numbers are a floor (see usage.rs).
//! Text for counting: `candidates[].content.parts[].text`, per candidate.
//! The response id: `responseId` (Interactions: the interaction's `id`);
//! finish reasons: `candidates[].finishReason`, by candidate `index`.
//!
//! Also read: the Interactions API (`/v1beta/interactions`, its `total_*`
//! usage) and Vertex AI embeddings (`:predict`, the sum of
//! `predictions[].embeddings.statistics.token_count`).

use super::openai::{ERROR_OBJ, TEXT_OR_BLOCKS};
use crate::descriptor::{Cond, Descriptor, Framing, ModelEnd, PathModel};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj, Or, Raw};
use crate::usage::Arithmetic;

const USAGE: Pat = Obj(
    Some(USAGE_RESET),
    &[
        ("promptTokenCount", Leaf(INPUT)),
        ("candidatesTokenCount", Leaf(OUTPUT)),
        ("totalTokenCount", Leaf(TOTAL)),
        ("thoughtsTokenCount", Leaf(REASONING)),
        ("cachedContentTokenCount", Leaf(CACHED)),
        ("toolUsePromptTokenCount", Leaf(EXTRA_INPUT)),
    ],
);

/// The Interactions API's usage (snake_case on the Gemini API, camelCase on
/// Vertex): thought tokens are outside `total_output_tokens`, tool-use tokens
/// are billed input, `total_tokens` is their sum.
const INTERACTION_USAGE: Pat = Obj(
    Some(USAGE_RESET),
    &[
        ("total_input_tokens", Leaf(INPUT)),
        ("total_output_tokens", Leaf(OUTPUT)),
        ("total_thought_tokens", Leaf(REASONING)),
        ("total_cached_tokens", Leaf(CACHED)),
        ("total_tool_use_tokens", Leaf(EXTRA_INPUT)),
        ("total_tokens", Leaf(TOTAL)),
        ("totalInputTokens", Leaf(INPUT)),
        ("totalOutputTokens", Leaf(OUTPUT)),
        ("totalThoughtTokens", Leaf(REASONING)),
        ("totalCachedTokens", Leaf(CACHED)),
        ("totalToolUseTokens", Leaf(EXTRA_INPUT)),
        ("totalTokens", Leaf(TOTAL)),
    ],
);

const CANDIDATE: Pat = Obj(
    Some(CHOICE),
    &[
        ("index", Leaf(CHOICE_INDEX)),
        ("finishReason", Leaf(FINISH)),
        (
            "content",
            Obj(
                None,
                &[("parts", Arr(&Obj(None, &[("text", Leaf(T_CONTENT))])))],
            ),
        ),
    ],
);

static RESPONSE: Pat = Obj(
    Some(ROOT),
    &[
        ("usageMetadata", USAGE),
        ("modelVersion", Leaf(MODEL)),
        ("responseId", Leaf(RESPONSE_ID)),
        ("error", ERROR_OBJ),
        ("candidates", Arr(&CANDIDATE)),
        // Interactions API: `interaction.completed` (`interaction.complete`
        // before steps), the non-streaming body, and `step.delta` text
        (
            "interaction",
            Obj(
                Some(FINAL),
                &[
                    ("id", Leaf(RESPONSE_ID)),
                    ("usage", INTERACTION_USAGE),
                    ("model", Leaf(MODEL)),
                ],
            ),
        ),
        // the non-streaming interaction's id
        ("id", Leaf(RESPONSE_ID)),
        ("usage", INTERACTION_USAGE),
        ("model", Leaf(MODEL)),
        ("index", Leaf(CHOICE_INDEX)),
        ("delta", Obj(None, &[("text", Leaf(T_CONTENT))])),
        (
            "steps",
            Arr(&Obj(
                Some(CHOICE),
                &[("content", Arr(&Obj(None, &[("text", Leaf(T_CONTENT))])))],
            )),
        ),
        // Vertex AI embeddings (`:predict`): the input is the sum over predictions
        (
            "predictions",
            Arr(&Obj(
                None,
                &[(
                    "embeddings",
                    Obj(
                        None,
                        &[("statistics", Obj(None, &[("token_count", Leaf(SUM_INPUT))]))],
                    ),
                )],
            )),
        ),
    ],
);
static RESPONSE_ARRAY: Pat = Arr(&RESPONSE);

/// Inline data and file references: the MIME type tells the kind (the REST
/// API takes camelCase and snake_case names).
const BLOB: Pat = Obj(
    None,
    &[
        ("mimeType", Leaf(R_KIND)),
        ("mime_type", Leaf(R_KIND)),
        ("data", Leaf(R_MEDIA)),
    ],
);
const FILE_DATA: Pat = Obj(
    None,
    &[
        ("mimeType", Leaf(R_KIND)),
        ("mime_type", Leaf(R_KIND)),
        ("fileUri", Leaf(R_MEDIA)),
        ("file_uri", Leaf(R_MEDIA)),
    ],
);
const FUNCTION_CALL: Pat = Obj(None, &[("name", Leaf(R_TEXT)), ("args", Raw(R_TEXT))]);
const FUNCTION_RESPONSE: Pat = Obj(None, &[("name", Leaf(R_TEXT)), ("response", Raw(R_TEXT))]);

/// A part: text, inline data, a file, a function call or response.
const PART: Pat = Obj(
    Some(R_PART_GEMINI),
    &[
        ("text", Leaf(R_TEXT)),
        ("inlineData", BLOB),
        ("inline_data", BLOB),
        ("fileData", FILE_DATA),
        ("file_data", FILE_DATA),
        ("functionCall", FUNCTION_CALL),
        ("function_call", FUNCTION_CALL),
        ("functionResponse", FUNCTION_RESPONSE),
        ("function_response", FUNCTION_RESPONSE),
    ],
);

/// `contents[].parts[]` and the system instruction.
const CONTENT: Pat = Obj(None, &[("parts", Arr(&PART))]);

/// `tools[].functionDeclarations[]`.
const DECLARATION: Pat = Obj(
    Some(R_TOOL),
    &[
        ("name", Leaf(R_TEXT)),
        ("description", Leaf(R_TEXT)),
        ("parameters", Raw(R_TEXT)),
        ("parametersJsonSchema", Raw(R_TEXT)),
        ("parameters_json_schema", Raw(R_TEXT)),
    ],
);
const TOOL_SET: Pat = Obj(
    None,
    &[
        ("functionDeclarations", Arr(&DECLARATION)),
        ("function_declarations", Arr(&DECLARATION)),
    ],
);

/// Structured output: `generationConfig.responseSchema` / `responseJsonSchema`;
/// the output limit `maxOutputTokens` (snake_case too, as the REST API takes it,
/// and as the Interactions API's `generation_config` names it).
const GENERATION_CONFIG: Pat = Obj(
    None,
    &[
        ("maxOutputTokens", Raw(R_MAX_OUTPUT)),
        ("max_output_tokens", Raw(R_MAX_OUTPUT)),
        ("responseSchema", Raw(R_TEXT)),
        ("response_schema", Raw(R_TEXT)),
        ("responseJsonSchema", Raw(R_TEXT)),
        ("response_json_schema", Raw(R_TEXT)),
    ],
);

static REQUEST: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("contents", Arr(&CONTENT)),
        // Interactions: a string or turns; Vertex embeddings: instances
        (
            "input",
            Or(&[
                Leaf(R_TEXT),
                Arr(&Or(&[
                    Leaf(R_TEXT),
                    Obj(None, &[("content", TEXT_OR_BLOCKS), ("text", Leaf(R_TEXT))]),
                ])),
            ]),
        ),
        ("instances", Arr(&Obj(None, &[("content", Leaf(R_TEXT))]))),
        ("systemInstruction", CONTENT),
        ("system_instruction", CONTENT),
        ("tools", Arr(&TOOL_SET)),
        ("generationConfig", GENERATION_CONFIG),
        ("generation_config", GENERATION_CONFIG),
    ],
);

const GENERATE: &[Cond] = &[Cond::PathContains(":generateContent")];
const STREAM_GENERATE: &[Cond] = &[Cond::PathContains(":streamGenerateContent")];

/// Gemini and Vertex AI differ only in id, name and path (`/projects/` on Vertex).
pub(crate) const fn google(
    id: &'static str,
    display: &'static str,
    detect: &'static [&'static [Cond]],
    body_markers: &'static [&'static str],
) -> Descriptor {
    Descriptor {
        id,
        display,
        detect,
        request: &REQUEST,
        response: &RESPONSE,
        response_array: &RESPONSE_ARRAY,
        inner: None,
        arithmetic: Arithmetic::COMPLETION_ADDS_REASONING,
        brace_framing: Framing::Json,
        nul_framing: None,
        path_model: Some(PathModel {
            after: "/models/",
            last: true,
            end: ModelEnd::Char(':'),
            percent_decoded: true,
        }),
        streams_by_path: STREAM_GENERATE,
        usage_headers: &[],
        body_markers,
    }
}

pub static GEMINI: Descriptor = google(
    "gemini",
    "Gemini",
    &[
        GENERATE,
        STREAM_GENERATE,
        &[Cond::PathContains("/v1beta/interactions")],
        &[Cond::PathContains("/v1alpha/interactions")],
        &[Cond::PathContains("/v1/interactions")],
    ],
    &[
        "\"usageMetadata\"",
        "\"candidates\"",
        "\"interaction.created\"",
        "\"interaction.completed\"",
        "\"interaction.complete\"",
    ],
);
