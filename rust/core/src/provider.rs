//! Provider ids, automatic detection, and what request paths tell.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAI,
    Azure,
    Anthropic,
    Gemini,
    VertexAI,
    Bedrock,
    Mistral,
    Ollama,
}

const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";

impl Provider {
    /// Resolve a provider id; `auto` (or an empty id) looks at the path and
    /// content type; an unknown id is treated as OpenAI-compatible.
    pub fn resolve(id: &str, path: &str, content_type: &str) -> Provider {
        match id.trim().to_ascii_lowercase().as_str() {
            "openai" => Provider::OpenAI,
            "azure" => Provider::Azure,
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            "vertex-ai" => Provider::VertexAI,
            "bedrock" => Provider::Bedrock,
            "mistral" => Provider::Mistral,
            "ollama" => Provider::Ollama,
            "auto" | "" => Provider::detect(path, content_type),
            _ => Provider::OpenAI,
        }
    }

    /// The provider id, as accepted by [`Provider::resolve`].
    pub fn id(self) -> &'static str {
        match self {
            Provider::OpenAI => "openai",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::VertexAI => "vertex-ai",
            Provider::Bedrock => "bedrock",
            Provider::Mistral => "mistral",
            Provider::Ollama => "ollama",
        }
    }

    /// Detection rules, first match wins (see README, "provider=auto").
    fn detect(path: &str, content_type: &str) -> Provider {
        let path = path_only(path);
        if content_type.to_ascii_lowercase().starts_with(EVENTSTREAM)
            || bedrock_model(path).is_some()
        {
            Provider::Bedrock
        } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
            if path.contains("/projects/") {
                Provider::VertexAI
            } else {
                Provider::Gemini
            }
        } else if path.contains("/openai/deployments/") {
            Provider::Azure
        } else if path.ends_with("/messages") {
            Provider::Anthropic
        } else if path.ends_with("/api/chat") || path.ends_with("/api/generate") {
            Provider::Ollama
        } else {
            Provider::OpenAI
        }
    }
}

/// The path without its query string.
pub fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or("")
}

/// `%XX` decoding; malformed escapes stay as they are; invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const BEDROCK_OPS: [&str; 4] = [
    "converse",
    "converse-stream",
    "invoke",
    "invoke-with-response-stream",
];

/// Bedrock: `/model/{modelId}/{operation}` -> (raw model id, operation).
fn bedrock_model(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind("/model/")?;
    let (model, op) = path[i + 7..].rsplit_once('/')?;
    (BEDROCK_OPS.contains(&op) && !model.is_empty()).then_some((model, op))
}

/// The model named by the path, where the API puts it there.
pub fn path_model(p: Provider, path: &str) -> Option<String> {
    let path = path_only(path);
    let name = match p {
        Provider::Gemini | Provider::VertexAI => {
            let rest = &path[path.rfind("/models/")? + 8..];
            rest.split(':').next()?.to_string()
        }
        Provider::Bedrock => percent_decode(bedrock_model(path)?.0),
        Provider::Azure => {
            let rest = &path[path.find("/openai/deployments/")? + 20..];
            percent_decode(rest.split('/').next()?)
        }
        _ => return None,
    };
    (!name.is_empty() && name.len() <= crate::usage::MODEL_MAX).then_some(name)
}

/// Whether the path itself asks for a stream.
pub fn path_streams(p: Provider, path: &str) -> Option<bool> {
    let path = path_only(path);
    match p {
        Provider::Gemini | Provider::VertexAI => Some(path.contains(":streamGenerateContent")),
        Provider::Bedrock => bedrock_model(path).map(|(_, op)| op.ends_with("stream")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_and_path_models() {
        let cases = [
            ("/v1/chat/completions", Provider::OpenAI, None),
            ("/v1/messages", Provider::Anthropic, None),
            ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", Provider::Gemini, Some("gemini-2.5-flash")),
            (
                "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
                Provider::VertexAI,
                Some("gemini-2.0-flash-001"),
            ),
            (
                "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream",
                Provider::Bedrock,
                Some("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            ),
            ("/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21", Provider::Azure, Some("my-gpt4o")),
            ("/api/chat", Provider::Ollama, None),
        ];
        for (path, p, model) in cases {
            assert_eq!(Provider::resolve("auto", path, ""), p, "{path}");
            assert_eq!(path_model(p, path).as_deref(), model, "{path}");
        }
        assert_eq!(
            Provider::resolve("auto", "/x", "application/vnd.amazon.eventstream"),
            Provider::Bedrock
        );
        assert_eq!(
            Provider::resolve("something-new", "/v1/messages", ""),
            Provider::OpenAI
        );
        assert_eq!(percent_decode("a%3Ab%zz%4"), "a:b%zz%4");
    }
}
