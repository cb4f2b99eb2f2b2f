"""OpenAI chat completions and OpenAI-compatible servers (mirror of openai.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import CACHED, ERROR, INPUT, MODEL, OUTPUT, REASONING, TOTAL
from . import Format

USAGE = Obj(None, {
    "prompt_tokens": Leaf(INPUT),
    "completion_tokens": Leaf(OUTPUT),
    "total_tokens": Leaf(TOTAL),
    "prompt_tokens_details": Obj(None, {"cached_tokens": Leaf(CACHED)}),
    "completion_tokens_details": Obj(None, {"reasoning_tokens": Leaf(REASONING)}),
})

CHAT = Obj(None, {"model": Leaf(MODEL), "usage": USAGE, "error": Obj(ERROR, {})})

FORMAT = Format(pat=CHAT, prompt_adds_cache=False)
