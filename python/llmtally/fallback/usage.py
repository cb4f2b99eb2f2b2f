"""Usage numbers: what formats report and how they combine (mirror of usage.rs)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from .data import CONSTANTS, FIELDS
from .json_scan import Sink

if TYPE_CHECKING:
    from .registry import Descriptor

# leaf and mark ids, as the Rust core numbers them (rust/core/src/field.rs)
INPUT, OUTPUT, TOTAL, CACHED, CACHE_WRITE, REASONING, EXTRA_INPUT = (
    FIELDS[n] for n in ("INPUT", "OUTPUT", "TOTAL", "CACHED", "CACHE_WRITE", "REASONING", "EXTRA_INPUT")
)
SLOTS = CONSTANTS["usage_slots"]
MODEL, ERROR, STREAM, INCLUDE_USAGE, USAGE_RESET, BYTES = (
    FIELDS[n] for n in ("MODEL", "ERROR", "STREAM", "INCLUDE_USAGE", "USAGE_RESET", "BYTES")
)
ROOT, CHOICE, TOOL, CHOICE_INDEX, TOOL_INDEX = (
    FIELDS[n] for n in ("ROOT", "CHOICE", "TOOL", "CHOICE_INDEX", "TOOL_INDEX")
)
T_CONTENT, T_REFUSAL, T_REASONING, T_TOOL_NAME, T_TOOL_ARGS = (
    FIELDS[n] for n in ("T_CONTENT", "T_REFUSAL", "T_REASONING", "T_TOOL_NAME", "T_TOOL_ARGS")
)
R_MSG, R_TEXT, R_NAME = (FIELDS[n] for n in ("R_MSG", "R_TEXT", "R_NAME"))


def is_text(f: int) -> bool:
    return T_CONTENT <= f <= T_TOOL_ARGS


MODEL_MAX = CONSTANTS["model_max"]
U64_MAX = (1 << 64) - 1


class ShortString:
    __slots__ = ("buf", "over")

    def __init__(self):
        self.buf = b""
        self.over = False

    def start(self) -> None:
        self.buf = b""
        self.over = False

    def push(self, s: bytes) -> None:
        if len(self.buf) + len(s) > MODEL_MAX:
            self.over = True
        else:
            self.buf += s

    def valid(self) -> bool:
        return not self.over and bool(self.buf)

    def take(self) -> str | None:
        if not self.valid():
            return None
        return self.buf.decode("utf-8", "replace")


def sat_add(a: int, b: int) -> int:
    return min(a + b, U64_MAX)


class UsageAcc(Sink):
    __slots__ = ("slots", "provider_model", "errors", "changes", "model_buf", "model_bytes")

    def __init__(self):
        self.slots: list[int | None] = [None] * SLOTS
        self.provider_model: str | None = None
        self.errors = 0
        self.changes = 0  # grows whenever a reported number or the provider's model changes
        self.model_buf = ShortString()
        self.model_bytes = b""  # what provider_model was decoded from

    def reported(self) -> bool:
        return any(v is not None for v in self.slots)

    def _get(self, f: int) -> int:
        v = self.slots[f]
        return 0 if v is None else v

    def numbers(self, fmt: Descriptor) -> tuple[int, int, int, int, int]:
        """prompt, completion, total, cached, reasoning, by the format's rules."""
        cached = self._get(CACHED)
        reasoning = self._get(REASONING)
        prompt = sat_add(self._get(INPUT), self._get(EXTRA_INPUT))
        if fmt.prompt_adds_cache:
            prompt = sat_add(sat_add(prompt, cached), self._get(CACHE_WRITE))
        completion = self._get(OUTPUT)
        if fmt.completion_adds_reasoning:
            completion = sat_add(completion, reasoning)
        total = self.slots[TOTAL]
        if total is None:
            total = sat_add(prompt, completion)
        return prompt, completion, total, cached, reasoning

    def int(self, f: int, v: int) -> None:
        if f < SLOTS and self.slots[f] != v:
            self.slots[f] = v
            self.changes += 1

    def str_start(self, f: builtins.int) -> None:
        if f == MODEL:
            self.model_buf.start()

    def str_piece(self, f: builtins.int, s: bytes) -> None:
        if f == MODEL:
            self.model_buf.push(s)

    def str_end(self, f: builtins.int) -> None:
        # a change is a change of bytes, as in Rust (two invalid sequences may decode alike)
        if f == MODEL and self.model_buf.valid() and self.model_buf.buf != self.model_bytes:
            self.model_bytes = self.model_buf.buf
            self.provider_model = self.model_buf.take()
            self.changes += 1

    def enter(self, mark: builtins.int) -> None:
        if mark == ERROR:
            self.errors += 1
        elif mark == USAGE_RESET:
            self.slots = [None] * SLOTS
