"""Gemini API and Vertex AI (mirror of gemini.rs)."""

from ..json_scan import Arr, Leaf, Obj
from ..usage import (CACHED, CHOICE, CHOICE_INDEX, EXTRA_INPUT, INPUT, MODEL, OUTPUT, REASONING, ROOT, T_CONTENT, TOTAL,
                     USAGE_RESET)
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

CANDIDATE = Obj(CHOICE, {
    "index": Leaf(CHOICE_INDEX),
    "content": Obj(None, {"parts": Arr(Obj(None, {"text": Leaf(T_CONTENT)}))}),
})

DOC = Obj(ROOT, {"usageMetadata": USAGE, "modelVersion": Leaf(MODEL), "error": ERROR_OBJ, "candidates": Arr(CANDIDATE)})

FORMAT = Format(pat=DOC, completion_adds_reasoning=True)
