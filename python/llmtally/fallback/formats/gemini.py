"""Gemini API and Vertex AI (mirror of gemini.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import CACHED, EXTRA_INPUT, INPUT, MODEL, OUTPUT, REASONING, TOTAL, USAGE_RESET
from . import Format
from .openai import ERROR_OBJ

USAGE = Obj(USAGE_RESET, {
    "promptTokenCount": Leaf(INPUT),
    "candidatesTokenCount": Leaf(OUTPUT),
    "totalTokenCount": Leaf(TOTAL),
    "thoughtsTokenCount": Leaf(REASONING),
    "cachedContentTokenCount": Leaf(CACHED),
    "toolUsePromptTokenCount": Leaf(EXTRA_INPUT),
})

DOC = Obj(None, {"usageMetadata": USAGE, "modelVersion": Leaf(MODEL), "error": ERROR_OBJ})

FORMAT = Format(pat=DOC, completion_adds_reasoning=True)
