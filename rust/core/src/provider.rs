//! Provider ids and automatic detection.

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

impl Provider {
    /// Resolve a provider id; `auto` (or an empty id) looks at the path, and
    /// an unknown id is treated as OpenAI-compatible.
    pub fn resolve(id: &str, path: &str) -> Provider {
        match id.trim().to_ascii_lowercase().as_str() {
            "openai" => Provider::OpenAI,
            "azure" => Provider::Azure,
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            "vertex-ai" => Provider::VertexAI,
            "bedrock" => Provider::Bedrock,
            "mistral" => Provider::Mistral,
            "ollama" => Provider::Ollama,
            "auto" | "" => Provider::detect(path),
            _ => Provider::OpenAI,
        }
    }

    fn detect(path: &str) -> Provider {
        let path = path.split('?').next().unwrap_or("");
        if path.ends_with("/v1/messages") || path.ends_with("/messages") && path.contains("anthropic") {
            Provider::Anthropic
        } else {
            Provider::OpenAI
        }
    }
}
