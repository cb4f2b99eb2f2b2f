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

use super::openai::ERROR_OBJ;
use crate::json::Pat::{self, Arr, Leaf, Obj};
use crate::usage::field::*;

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

static DOC: Pat = Obj(
    Some(ROOT),
    &[
        ("usageMetadata", USAGE),
        ("modelVersion", Leaf(MODEL)),
        ("error", ERROR_OBJ),
        ("candidates", Arr(&CANDIDATE)),
    ],
);
declare_format!(inner: None, prompt_adds_cache: false, completion_adds_reasoning: true);
