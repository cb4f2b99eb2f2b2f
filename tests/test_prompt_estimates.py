"""Prompt estimates per request format, against an independent oracle
(tests/oracle.py, the real tiktoken), and the seed's 21. Both backends."""

import json

import pytest

import llmtally
import oracle

REQUESTS = [
    (
        "openai",
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {
                    "role": "user",
                    "name": "alice",
                    "content": [
                        {"type": "text", "text": "Describe"},
                        {"type": "image_url", "image_url": {"url": "data:,"}},
                        {"type": "text", "text": " this picture, briefly."},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"q": "picture"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "A cat on a mat."},
            ],
        },
    ),
    ("openai", "/v1/responses", {"model": "gpt-4.1", "instructions": "Be brief.", "input": "Tell me a joke 😀"}),
    (
        "openai",
        "/v1/responses",
        {
            "model": "o3",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]},
                {"role": "assistant", "content": "4"},
            ],
        },
    ),
    ("openai", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": ["Say this", "is a test"]}),
    ("openai", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "The food was delicious"}),
    ("openai", "/v1/embeddings", {"model": "text-embedding-3-large", "input": [[1, 2, 3], [4, 5]]}),
    (
        "azure",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        {"messages": [{"role": "user", "content": "Hallo Welt"}]},
    ),
    (
        "anthropic",
        "/v1/messages",
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "You are Claude."}],
            "messages": [
                {"role": "user", "content": "Hello, Claude"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "15 degrees"}],
                        }
                    ],
                },
            ],
        },
    ),
    (
        "gemini",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {
            "systemInstruction": {"parts": [{"text": "You are a cat."}]},
            "contents": [{"role": "user", "parts": [{"text": "Hello there"}, {"text": " and again"}]}],
        },
    ),
    (
        "bedrock",
        "/model/amazon.nova-lite-v1%3A0/converse",
        {
            "system": [{"text": "Answer in French."}],
            "messages": [{"role": "user", "content": [{"text": "Good morning"}]}],
        },
    ),
    ("ollama", "/api/generate", {"model": "llama3.2", "prompt": "Why is the sky blue?", "system": "Be short."}),
    ("ollama", "/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue?"}]}),
]


@pytest.mark.parametrize("provider, path, body", REQUESTS, ids=[f"{p}{u}" for p, u, _ in REQUESTS])
def test_prompt_estimates_per_format(provider, path, body, backend):
    info = llmtally.parse_request(json.dumps(body).encode(), provider, path, backend=backend)
    enc = oracle.encoding_for(info.model)
    assert info.prompt_tokens == oracle.prompt_estimate(body, provider, enc) > 0


def test_the_seed_prompt_is_21(backend):
    body = b"""{
    "model": "gpt-3.5-turbo",
    "messages": [
      {
        "role": "user",
        "content": "Please explain the movie Dr. Strangelove in 1 sentence."
      }
    ]
   }"""
    assert llmtally.parse_request(body, "openai", "/v1/chat/completions", backend=backend).prompt_tokens == 21
