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
/// Summed slots: every value adds (Anthropic `usage.iterations[]`, Vertex
/// `predictions[]`); reset on entering a `SUM_RESET` object. Where reported,
/// they replace INPUT, OUTPUT, CACHED and CACHE_WRITE.
pub const SUM_INPUT: Field = 7;
pub const SUM_OUTPUT: Field = 8;
pub const SUM_CACHED: Field = 9;
pub const SUM_CACHE_WRITE: Field = 10;
/// A server's own counters, used only when no usage proper is reported
/// (llama.cpp `timings`: `prompt_n` excludes the `cache_n` reused tokens).
pub const ALT_INPUT: Field = 11;
pub const ALT_CACHED: Field = 12;
pub const ALT_OUTPUT: Field = 13;
pub const SLOTS: usize = 14;
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
/// Mark: an object whose arrays of summed values start from zero.
pub const SUM_RESET: Field = 27;
/// A finish reason (any string, or `true`): usage reported in this document
/// or a later one is final; earlier usage was provisional (see usage.rs).
/// A string value is also the finish reason of the current choice
/// (`Usage::finish_reasons`).
pub const FINISH: Field = 28;
/// Mark: an object only final events carry (the Responses API's `response`,
/// Gemini's `interaction`): entering it counts as a finish reason.
pub const FINAL: Field = 29;
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
/// Other billed output text (Cohere's `tool_plan`).
pub const T_PLAN: Field = 35;
/// Reasoning text under other names, which some providers send beside
/// `T_REASONING` with the same text: per choice, the largest count of the
/// three kinds is the reasoning (never their sum).
pub const T_REASONING_ALT: Field = 36;
pub const T_REASONING_DETAIL: Field = 37;
/// The provider's id of the response (string leaf; the first valid one wins).
pub const RESPONSE_ID: Field = 38;
/// Request side: a chat message (mark), a counted string (an integer
/// there is one token id), a `name` (counted, plus one token).
pub const R_MSG: Field = 40;
pub const R_TEXT: Field = 41;
pub const R_NAME: Field = 42;
/// Marks: a tool (function) definition, which adds a fixed overhead; an
/// Anthropic tool also brings Anthropic's tool-use system prompt (once per
/// request). Its name, description and schema are `R_TEXT` leaves (the
/// schema a `Raw` one).
pub const R_TOOL: Field = 43;
pub const R_TOOL_ANTHROPIC: Field = 44;
/// Marks: a content part (or message) whose images, audio, video and files
/// are billed by OpenAI's, Anthropic's or Gemini's rules (see request.rs).
pub const R_PART_OPENAI: Field = 45;
pub const R_PART_ANTHROPIC: Field = 46;
pub const R_PART_GEMINI: Field = 47;
/// In a part: a string that tells its kind (a `type` or a MIME type), the
/// `detail` asked of an image, and the data (base64, a data URL) or a
/// reference (URL, file id) of an image, audio, a video, a file, or of the
/// kind the part tells.
pub const R_KIND: Field = 48;
pub const R_DETAIL: Field = 49;
pub const R_IMAGE: Field = 50;
pub const R_AUDIO: Field = 51;
pub const R_VIDEO: Field = 52;
pub const R_FILE: Field = 53;
pub const R_MEDIA: Field = 54;
/// The output-token limit a request asks for (a `Raw` leaf: any value is
/// delivered, so a later non-integer one clears an earlier integer, as a
/// JSON parser keeps the last): OpenAI `max_completion_tokens` and
/// `max_output_tokens`, Anthropic and Cohere `max_tokens`, Gemini
/// `generationConfig.maxOutputTokens`, Bedrock Converse
/// `inferenceConfig.maxTokens` (and other Bedrock model bodies' fields),
/// Ollama `options.num_predict`.
pub const R_MAX_OUTPUT: Field = 55;
/// A limit that yields to `R_MAX_OUTPUT` (OpenAI's older `max_tokens`:
/// used only when no `R_MAX_OUTPUT` value is read).
pub const R_MAX_OUTPUT_ALT: Field = 56;

pub fn is_text(f: Field) -> bool {
    (T_CONTENT..=T_REASONING_DETAIL).contains(&f)
}

pub fn is_reasoning(f: Field) -> bool {
    matches!(f, T_REASONING | T_REASONING_ALT | T_REASONING_DETAIL)
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
    ("SUM_INPUT", SUM_INPUT),
    ("SUM_OUTPUT", SUM_OUTPUT),
    ("SUM_CACHED", SUM_CACHED),
    ("SUM_CACHE_WRITE", SUM_CACHE_WRITE),
    ("ALT_INPUT", ALT_INPUT),
    ("ALT_CACHED", ALT_CACHED),
    ("ALT_OUTPUT", ALT_OUTPUT),
    ("MODEL", MODEL),
    ("ERROR", ERROR),
    ("STREAM", STREAM),
    ("INCLUDE_USAGE", INCLUDE_USAGE),
    ("USAGE_RESET", USAGE_RESET),
    ("BYTES", BYTES),
    ("ROOT", ROOT),
    ("CHOICE", CHOICE),
    ("TOOL", TOOL),
    ("SUM_RESET", SUM_RESET),
    ("FINISH", FINISH),
    ("FINAL", FINAL),
    ("CHOICE_INDEX", CHOICE_INDEX),
    ("TOOL_INDEX", TOOL_INDEX),
    ("T_CONTENT", T_CONTENT),
    ("T_REFUSAL", T_REFUSAL),
    ("T_REASONING", T_REASONING),
    ("T_TOOL_NAME", T_TOOL_NAME),
    ("T_TOOL_ARGS", T_TOOL_ARGS),
    ("T_PLAN", T_PLAN),
    ("T_REASONING_ALT", T_REASONING_ALT),
    ("T_REASONING_DETAIL", T_REASONING_DETAIL),
    ("RESPONSE_ID", RESPONSE_ID),
    ("R_MSG", R_MSG),
    ("R_TEXT", R_TEXT),
    ("R_NAME", R_NAME),
    ("R_TOOL", R_TOOL),
    ("R_TOOL_ANTHROPIC", R_TOOL_ANTHROPIC),
    ("R_PART_OPENAI", R_PART_OPENAI),
    ("R_PART_ANTHROPIC", R_PART_ANTHROPIC),
    ("R_PART_GEMINI", R_PART_GEMINI),
    ("R_KIND", R_KIND),
    ("R_DETAIL", R_DETAIL),
    ("R_IMAGE", R_IMAGE),
    ("R_AUDIO", R_AUDIO),
    ("R_VIDEO", R_VIDEO),
    ("R_FILE", R_FILE),
    ("R_MEDIA", R_MEDIA),
    ("R_MAX_OUTPUT", R_MAX_OUTPUT),
    ("R_MAX_OUTPUT_ALT", R_MAX_OUTPUT_ALT),
];
