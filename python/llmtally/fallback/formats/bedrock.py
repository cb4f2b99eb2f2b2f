"""Amazon Bedrock: Converse(Stream), InvokeModel(WithResponseStream) (mirror of bedrock.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import BYTES, CACHE_WRITE, CACHED, INPUT, MODEL, OUTPUT, TOTAL
from . import Format
from .anthropic import MESSAGE
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
    "model": Leaf(MODEL),
    "usage": USAGE,
    "message": MESSAGE,
    "amazon-bedrock-invocationMetrics": METRICS,
    "prompt_token_count": Leaf(INPUT),
    "generation_token_count": Leaf(OUTPUT),
    "error": ERROR_OBJ,
}

INNER = Obj(None, _MODEL_DOC)
DOC = Obj(None, {"bytes": Leaf(BYTES), "metadata": Obj(None, {"usage": USAGE}), **_MODEL_DOC})

FORMAT = Format(pat=DOC, prompt_adds_cache=True, inner=INNER)
