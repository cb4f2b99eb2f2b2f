"""Amazon Bedrock: Converse(Stream), InvokeModel(WithResponseStream) (mirror of bedrock.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import BYTES, CACHE_WRITE, CACHED, CHOICE_INDEX, INPUT, MODEL, OUTPUT, ROOT, T_TOOL_NAME, TOTAL
from . import Format
from .anthropic import BLOCK_START, DELTA, MESSAGE
from .openai import ERROR_OBJ

USAGE = Obj(None, {
    "inputTokens": Leaf(INPUT),
    "outputTokens": Leaf(OUTPUT),
    "totalTokens": Leaf(TOTAL),
    "cacheReadInputTokens": Leaf(CACHED),
    "cacheWriteInputTokens": Leaf(CACHE_WRITE),
    "input_tokens": Leaf(INPUT),
    "output_tokens": Leaf(OUTPUT),
    "cache_read_input_tokens": Leaf(CACHED),
    "cache_creation_input_tokens": Leaf(CACHE_WRITE),
})

METRICS = Obj(None, {
    "inputTokenCount": Leaf(INPUT),
    "outputTokenCount": Leaf(OUTPUT),
    "cacheReadInputTokenCount": Leaf(CACHED),
    "cacheWriteInputTokenCount": Leaf(CACHE_WRITE),
})

_MODEL_DOC = {
    "index": Leaf(CHOICE_INDEX),
    "delta": DELTA,
    "content_block": BLOCK_START,
    "model": Leaf(MODEL),
    "usage": USAGE,
    "message": MESSAGE,
    "amazon-bedrock-invocationMetrics": METRICS,
    "prompt_token_count": Leaf(INPUT),
    "generation_token_count": Leaf(OUTPUT),
    "error": ERROR_OBJ,
}

INNER = Obj(ROOT, _MODEL_DOC)
DOC = Obj(ROOT, {
    "bytes": Leaf(BYTES),
    "contentBlockIndex": Leaf(CHOICE_INDEX),
    "start": Obj(None, {"toolUse": Obj(None, {"name": Leaf(T_TOOL_NAME)})}),
    "metadata": Obj(None, {"usage": USAGE}),
    **_MODEL_DOC,
})

FORMAT = Format(pat=DOC, prompt_adds_cache=True, inner=INNER)
