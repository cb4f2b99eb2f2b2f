//! Gemini API and Vertex AI: `generateContent` and `streamGenerateContent`
//! (SSE with `alt=sse`, otherwise one JSON array whose elements arrive over
//! time).
//!
//! Every chunk may carry a cumulative `usageMetadata`: the latest object
//! replaces all earlier ones. `promptTokenCount` includes the cached tokens;
//! `toolUsePromptTokenCount` is billed input too and is added to the prompt;
//! `thoughtsTokenCount` (reasoning) is not part of `candidatesTokenCount`
//! and is added to the completion. `modelVersion` is the provider's model.
//! Text for counting: `candidates[].content.parts[].text`, per candidate.

use super::openai::{ERROR_OBJ, TEXT_BLOCKS};
use crate::descriptor::{Cond, Descriptor, Framing, ModelEnd, PathModel};
use crate::field::*;
use crate::json::Pat::{self, Arr, Leaf, Obj};
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

const CANDIDATE: Pat = Obj(
    Some(CHOICE),
    &[
        ("index", Leaf(CHOICE_INDEX)),
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
        ("error", ERROR_OBJ),
        ("candidates", Arr(&CANDIDATE)),
    ],
);
static RESPONSE_ARRAY: Pat = Arr(&RESPONSE);

/// `contents[].parts[].text` and the system instruction.
const CONTENT: Pat = Obj(None, &[("parts", TEXT_BLOCKS)]);
static REQUEST: Pat = Obj(
    None,
    &[
        ("model", Leaf(MODEL)),
        ("stream", Leaf(STREAM)),
        ("contents", Arr(&CONTENT)),
        ("systemInstruction", CONTENT),
        ("system_instruction", CONTENT),
    ],
);

const GENERATE: &[Cond] = &[Cond::PathContains(":generateContent")];
const STREAM_GENERATE: &[Cond] = &[Cond::PathContains(":streamGenerateContent")];

/// Gemini and Vertex AI differ only in id, name and path (`/projects/` on Vertex).
pub(crate) const fn google(
    id: &'static str,
    display: &'static str,
    detect: &'static [&'static [Cond]],
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
            percent_decoded: false,
        }),
        streams_by_path: STREAM_GENERATE,
    }
}

pub static GEMINI: Descriptor = google("gemini", "Gemini", &[GENERATE, STREAM_GENERATE]);
