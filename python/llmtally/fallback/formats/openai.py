"""OpenAI and OpenAI-compatible servers: chat, legacy completions, Responses
API, embeddings (mirror of openai.rs)."""

from ..json_scan import Arr, Leaf, Obj
from ..usage import (CACHED, CHOICE, CHOICE_INDEX, ERROR, INPUT, MODEL, OUTPUT, REASONING, ROOT, T_CONTENT, T_REASONING,
                     T_REFUSAL, T_TOOL_ARGS, T_TOOL_NAME, TOOL, TOOL_INDEX, TOTAL)
from . import Format

USAGE = Obj(None, {
    "prompt_tokens": Leaf(INPUT),
    "completion_tokens": Leaf(OUTPUT),
    "input_tokens": Leaf(INPUT),
    "output_tokens": Leaf(OUTPUT),
    "total_tokens": Leaf(TOTAL),
    "prompt_tokens_details": Obj(None, {"cached_tokens": Leaf(CACHED)}),
    "input_tokens_details": Obj(None, {"cached_tokens": Leaf(CACHED)}),
    "completion_tokens_details": Obj(None, {"reasoning_tokens": Leaf(REASONING)}),
    "output_tokens_details": Obj(None, {"reasoning_tokens": Leaf(REASONING)}),
})

ERROR_OBJ = Obj(ERROR, {})

TOOL_CALL = Obj(TOOL, {
    "index": Leaf(TOOL_INDEX),
    "function": Obj(None, {"name": Leaf(T_TOOL_NAME), "arguments": Leaf(T_TOOL_ARGS)}),
})

MESSAGE = Obj(None, {
    "content": Leaf(T_CONTENT),
    "refusal": Leaf(T_REFUSAL),
    "reasoning_content": Leaf(T_REASONING),
    "tool_calls": Arr(TOOL_CALL),
})

CHOICE_OBJ = Obj(CHOICE, {"index": Leaf(CHOICE_INDEX), "delta": MESSAGE, "message": MESSAGE, "text": Leaf(T_CONTENT)})

DOC = Obj(ROOT, {
    "model": Leaf(MODEL),
    "usage": USAGE,
    "error": ERROR_OBJ,
    "response": Obj(None, {"model": Leaf(MODEL), "usage": USAGE, "error": ERROR_OBJ}),
    "choices": Arr(CHOICE_OBJ),
    "output_index": Leaf(CHOICE_INDEX),
    "content_index": Leaf(TOOL_INDEX),
    "delta": Leaf(T_CONTENT),
})

FORMAT = Format(pat=DOC)
