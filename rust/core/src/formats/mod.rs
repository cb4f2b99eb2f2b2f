//! Provider formats: which JSON paths carry usage, and how to combine them.

pub mod anthropic;
pub mod openai;

use crate::json::Pat;

pub struct Format {
    /// Paths of interest in each JSON document of the response.
    pub pat: &'static Pat,
    /// The provider's input count excludes cache reads and writes, so they
    /// are added to make `prompt_tokens` every billed input token.
    pub prompt_adds_cache: bool,
}
