"""Anthropic Messages (mirror of anthropic.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import (CACHE_WRITE, CACHED, CHOICE_INDEX, INPUT, MODEL, OUTPUT, ROOT, T_CONTENT, T_REASONING, T_TOOL_ARGS,
                     T_TOOL_NAME)
from . import Format
from .openai import ERROR_OBJ

USAGE = Obj(None, {
    "input_tokens": Leaf(INPUT),
    "output_tokens": Leaf(OUTPUT),
    "cache_read_input_tokens": Leaf(CACHED),
    "cache_creation_input_tokens": Leaf(CACHE_WRITE),
})

MESSAGE = Obj(None, {"model": Leaf(MODEL), "usage": USAGE})

# `delta` of a content block (Anthropic), union with Bedrock Converse's
DELTA = Obj(None, {
    "text": Leaf(T_CONTENT),
    "thinking": Leaf(T_REASONING),
    "partial_json": Leaf(T_TOOL_ARGS),
    "toolUse": Obj(None, {"input": Leaf(T_TOOL_ARGS)}),
    "reasoningContent": Obj(None, {"text": Leaf(T_REASONING)}),
})

BLOCK_START = Obj(None, {"name": Leaf(T_TOOL_NAME)})

DOC = Obj(ROOT, {
    "model": Leaf(MODEL),
    "usage": USAGE,
    "message": MESSAGE,
    "error": ERROR_OBJ,
    "index": Leaf(CHOICE_INDEX),
    "delta": DELTA,
    "content_block": BLOCK_START,
})

FORMAT = Format(pat=DOC, prompt_adds_cache=True)
