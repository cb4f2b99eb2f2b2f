//! Mistral: OpenAI's Chat Completions format, with `usage` on the last
//! content chunk (the one with `finish_reason`) instead of a separate usage
//! chunk. Only chosen by id: its paths are OpenAI's.

use super::openai::compatible;
use crate::descriptor::Descriptor;

pub static MISTRAL: Descriptor = compatible("mistral", "Mistral", &[]);
