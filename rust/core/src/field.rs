//! Ids of the leaves and marks in every pattern (a leaf module: formats,
//! the scanner and the request parser all name values by these numbers, and
//! the registry export names them for the fallback).

/// Identifier a pattern gives to a leaf or to a marked object.
pub type Field = u16;

/// Usage slots (index into the usage accumulator).
pub const INPUT: Field = 0;
pub const OUTPUT: Field = 1;
pub const TOTAL: Field = 2;
pub const CACHED: Field = 3;
pub const CACHE_WRITE: Field = 4;
pub const REASONING: Field = 5;
/// Input billed besides the prompt (Gemini `toolUsePromptTokenCount`).
pub const EXTRA_INPUT: Field = 6;
pub const SLOTS: usize = 7;
/// A model name (string leaf).
pub const MODEL: Field = 16;
/// Mark: an error object.
pub const ERROR: Field = 17;
/// Request leaves.
pub const STREAM: Field = 18;
pub const INCLUDE_USAGE: Field = 19;
/// Mark: a usage object that replaces all earlier usage (Gemini's cumulative `usageMetadata`).
pub const USAGE_RESET: Field = 20;
/// A base64 string wrapping a nested document (Bedrock `chunk` payloads).
pub const BYTES: Field = 21;
/// Marks: a document's root, a choice (array element), a tool call.
pub const ROOT: Field = 22;
pub const CHOICE: Field = 23;
pub const TOOL: Field = 24;
/// Leaves naming the current choice / tool call (else their position).
pub const CHOICE_INDEX: Field = 25;
pub const TOOL_INDEX: Field = 26;
/// Streamed output text, by kind (each kind of each choice and tool call
/// is its own text).
pub const T_CONTENT: Field = 30;
pub const T_REFUSAL: Field = 31;
pub const T_REASONING: Field = 32;
pub const T_TOOL_NAME: Field = 33;
pub const T_TOOL_ARGS: Field = 34;
/// Request side: a chat message (mark), a counted string (an integer
/// there is one token id), a `name` (counted, plus one token).
pub const R_MSG: Field = 40;
pub const R_TEXT: Field = 41;
pub const R_NAME: Field = 42;

pub fn is_text(f: Field) -> bool {
    (T_CONTENT..=T_TOOL_ARGS).contains(&f)
}

/// Every id by name, for the registry export.
pub const NAMES: &[(&str, Field)] = &[
    ("INPUT", INPUT),
    ("OUTPUT", OUTPUT),
    ("TOTAL", TOTAL),
    ("CACHED", CACHED),
    ("CACHE_WRITE", CACHE_WRITE),
    ("REASONING", REASONING),
    ("EXTRA_INPUT", EXTRA_INPUT),
    ("MODEL", MODEL),
    ("ERROR", ERROR),
    ("STREAM", STREAM),
    ("INCLUDE_USAGE", INCLUDE_USAGE),
    ("USAGE_RESET", USAGE_RESET),
    ("BYTES", BYTES),
    ("ROOT", ROOT),
    ("CHOICE", CHOICE),
    ("TOOL", TOOL),
    ("CHOICE_INDEX", CHOICE_INDEX),
    ("TOOL_INDEX", TOOL_INDEX),
    ("T_CONTENT", T_CONTENT),
    ("T_REFUSAL", T_REFUSAL),
    ("T_REASONING", T_REASONING),
    ("T_TOOL_NAME", T_TOOL_NAME),
    ("T_TOOL_ARGS", T_TOOL_ARGS),
    ("R_MSG", R_MSG),
    ("R_TEXT", R_TEXT),
    ("R_NAME", R_NAME),
];
