//! Vertex AI's Gemini models: the Gemini formats under
//! `/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:...`.

use super::gemini::google;
use crate::descriptor::{Cond, Descriptor};

pub static VERTEX_AI: Descriptor = google(
    "vertex-ai",
    "VertexAI",
    &[
        &[
            Cond::PathContains(":generateContent"),
            Cond::PathContains("/projects/"),
        ],
        &[
            Cond::PathContains(":streamGenerateContent"),
            Cond::PathContains("/projects/"),
        ],
        &[
            Cond::PathContains(":predict"),
            Cond::PathContains("/projects/"),
        ],
        &[
            Cond::PathContains("/interactions"),
            Cond::PathContains("/projects/"),
        ],
    ],
    // embeddings; its other responses read as Gemini's
    &["\"predictions\""],
);
