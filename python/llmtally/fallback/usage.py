"""Usage numbers: what formats report and how they combine (mirror of usage.rs)."""

from __future__ import annotations

import builtins
import re
from typing import TYPE_CHECKING

from .data import CONSTANTS, FIELDS
from .json_scan import Sink

if TYPE_CHECKING:
    from .registry import Descriptor

# leaf and mark ids, as the Rust core numbers them (rust/core/src/field.rs)
INPUT, OUTPUT, TOTAL, CACHED, CACHE_WRITE, REASONING, EXTRA_INPUT = (
    FIELDS[n] for n in ("INPUT", "OUTPUT", "TOTAL", "CACHED", "CACHE_WRITE", "REASONING", "EXTRA_INPUT")
)
SUM_INPUT, SUM_OUTPUT, SUM_CACHED, SUM_CACHE_WRITE, ALT_INPUT, ALT_CACHED, ALT_OUTPUT = (
    FIELDS[n]
    for n in ("SUM_INPUT", "SUM_OUTPUT", "SUM_CACHED", "SUM_CACHE_WRITE", "ALT_INPUT", "ALT_CACHED", "ALT_OUTPUT")
)
SLOTS = CONSTANTS["usage_slots"]
MODEL, ERROR, STREAM, INCLUDE_USAGE, USAGE_RESET, BYTES, SUM_RESET, FINISH, FINAL = (
    FIELDS[n]
    for n in ("MODEL", "ERROR", "STREAM", "INCLUDE_USAGE", "USAGE_RESET", "BYTES", "SUM_RESET", "FINISH", "FINAL")
)
ROOT, CHOICE, TOOL, CHOICE_INDEX, TOOL_INDEX = (
    FIELDS[n] for n in ("ROOT", "CHOICE", "TOOL", "CHOICE_INDEX", "TOOL_INDEX")
)
T_CONTENT, T_REFUSAL, T_REASONING, T_TOOL_NAME, T_TOOL_ARGS, T_PLAN, T_REASONING_ALT, T_REASONING_DETAIL = (
    FIELDS[n]
    for n in (
        "T_CONTENT",
        "T_REFUSAL",
        "T_REASONING",
        "T_TOOL_NAME",
        "T_TOOL_ARGS",
        "T_PLAN",
        "T_REASONING_ALT",
        "T_REASONING_DETAIL",
    )
)
R_MSG, R_TEXT, R_NAME = (FIELDS[n] for n in ("R_MSG", "R_TEXT", "R_NAME"))
RESPONSE_ID = FIELDS["RESPONSE_ID"]
_SUMS = range(SUM_INPUT, SUM_CACHE_WRITE + 1)
#: every slot but a server's own counters (ALT_*), which count only when none of these is reported
_PROPER = tuple(s for s in range(SLOTS) if not ALT_INPUT <= s <= ALT_OUTPUT)


def is_text(f: int) -> bool:
    return T_CONTENT <= f <= T_REASONING_DETAIL


def is_reasoning(f: int) -> bool:
    return f in (T_REASONING, T_REASONING_ALT, T_REASONING_DETAIL)


MODEL_MAX = CONSTANTS["model_max"]
RESPONSE_ID_MAX = CONSTANTS["response_id_max"]
FINISH_REASON_MAX = CONSTANTS["finish_reason_max"]
FINISH_REASONS_MAX = CONSTANTS["finish_reasons_max"]
U64_MAX = (1 << 64) - 1
#: what a response id or finish reason may hold: printable ASCII (usage.rs `printable`)
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


def printable(b: bytes) -> bool:
    return _PRINTABLE.fullmatch(b) is not None


class ShortString:
    """A short string leaf (a model name, an id), kept up to `cap` bytes."""

    __slots__ = ("buf", "over", "cap")

    def __init__(self, cap: int = MODEL_MAX):
        self.buf = b""
        self.over = False
        self.cap = cap

    def start(self) -> None:
        self.buf = b""
        self.over = False

    def push(self, s: bytes) -> None:
        if len(self.buf) + len(s) > self.cap:
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
    __slots__ = (
        "slots",
        "provider_model",
        "errors",
        "changes",
        "model_buf",
        "model_bytes",
        "doc",
        "finish_doc",
        "usage_doc",
        "text_doc",
        "headers",
        "response_id",
        "id_buf",
        "finish_buf",
        "finish_held",
        "finish_pending",
        "finishes",
    )

    def __init__(self):
        self.slots: list[int | None] = [None] * SLOTS
        self.provider_model: str | None = None
        self.errors = 0
        self.changes = 0  # grows whenever a reported number or the provider's model changes
        self.model_buf = ShortString()
        self.model_bytes = b""  # what provider_model was decoded from
        # documents begun, the one of the first finish reason, the one of the latest number
        self.doc = 0
        self.finish_doc: int | None = None
        self.usage_doc = 0
        self.text_doc = 0  # the document of the latest output text
        self.headers: list[int | None] = [None] * SLOTS  # usage from response headers, over any body value
        self.response_id: str | None = None  # the first valid one
        self.id_buf = ShortString(RESPONSE_ID_MAX)
        # the finish reason being read, and the latest valid one of the current choice (or document),
        # held until the choice's index is known (commit_finish)
        self.finish_buf = ShortString(FINISH_REASON_MAX)
        self.finish_held = b""
        self.finish_pending = False
        self.finishes: list[tuple[int, str]] = []  # (choice index, reason), sorted by index

    def reported(self) -> bool:
        return any(v is not None for v in self.slots) or any(v is not None for v in self.headers)

    def header(self, f: int, v: int) -> None:
        if f < SLOTS:
            self.headers[f] = v
            self.changes += 1

    def saw_text(self) -> None:
        self.text_doc = self.doc

    def mark_final(self) -> None:
        self.finish_doc = self.doc if self.finish_doc is None else min(self.finish_doc, self.doc)

    def commit_finish(self, choice: int) -> None:
        """The held finish reason becomes the reason of choice `choice`, replacing an earlier one."""
        if not self.finish_pending:
            return
        self.finish_pending = False
        v = self.finish_held.decode("ascii")  # printable ASCII only
        fin = self.finishes
        i = 0
        while i < len(fin) and fin[i][0] < choice:
            i += 1
        if i < len(fin) and fin[i][0] == choice:
            if fin[i][1] != v:
                fin[i] = (choice, v)
                self.changes += 1
        elif len(fin) < FINISH_REASONS_MAX:
            fin.insert(i, (choice, v))
            self.changes += 1

    def finish_reasons(self) -> tuple[str, ...]:
        return tuple(v for _, v in self.finishes)

    def is_final(self) -> bool:
        # and no text came after the latest number (another choice still streaming)
        return self.finish_doc is not None and self.usage_doc >= self.finish_doc and self.usage_doc >= self.text_doc

    def numbers(self, fmt: Descriptor) -> tuple[int, int, int, int, int, int]:
        """prompt, completion, total, cached, cache write, reasoning, by the format's rules (see usage.rs)."""
        slots = [v if h is None else h for h, v in zip(self.headers, self.slots, strict=True)]

        def get(f: int) -> int:
            v = slots[f]
            return 0 if v is None else v

        def get_or_sum(f: int, total: int) -> int:
            v = slots[total]
            return get(f) if v is None else v

        if all(slots[s] is None for s in _PROPER):  # only a server's own counters (llama.cpp `timings`)
            cached = get(ALT_CACHED)
            prompt = sat_add(get(ALT_INPUT), cached)
            completion = get(ALT_OUTPUT)
            return prompt, completion, sat_add(prompt, completion), cached, 0, 0
        cached = get_or_sum(CACHED, SUM_CACHED)
        cache_write = get_or_sum(CACHE_WRITE, SUM_CACHE_WRITE)
        reasoning = get(REASONING)
        prompt = sat_add(get_or_sum(INPUT, SUM_INPUT), get(EXTRA_INPUT))
        if fmt.prompt_adds_cache:
            prompt = sat_add(sat_add(prompt, cached), cache_write)
        completion = get_or_sum(OUTPUT, SUM_OUTPUT)
        if fmt.completion_adds_reasoning:
            completion = sat_add(completion, reasoning)
        total = slots[TOTAL]
        if total is not None and slots[SUM_INPUT] is None and slots[SUM_OUTPUT] is None:
            if reasoning > 0 and prompt + completion + reasoning == total:  # xAI: completion excluded reasoning
                completion += reasoning
        else:
            total = sat_add(prompt, completion)
        return prompt, completion, total, cached, cache_write, reasoning

    def int(self, f: int, v: int) -> None:
        if f >= SLOTS:
            return
        self.usage_doc = self.doc
        if f in _SUMS:
            old = self.slots[f]
            v = sat_add(0 if old is None else old, v)
        if self.slots[f] != v:
            self.slots[f] = v
            self.changes += 1

    def boolean(self, f: builtins.int, v: bool) -> None:
        if f == FINISH and v and self.finish_doc is None:
            self.finish_doc = self.doc

    def str_start(self, f: builtins.int) -> None:
        if f == MODEL:
            self.model_buf.start()
        elif f == FINISH:
            self.finish_buf.start()
        elif f == RESPONSE_ID and self.response_id is None:
            self.id_buf.start()

    def str_piece(self, f: builtins.int, s: bytes) -> None:
        if f == MODEL:
            self.model_buf.push(s)
        elif f == FINISH:
            if s and self.finish_doc is None:  # a non-empty finish reason
                self.finish_doc = self.doc
            self.finish_buf.push(s)
        elif f == RESPONSE_ID and self.response_id is None:  # once one is kept, the rest are ignored
            self.id_buf.push(s)

    def str_end(self, f: builtins.int) -> None:
        # a change is a change of bytes, as in Rust (two invalid sequences may decode alike)
        if f == MODEL:
            if self.model_buf.valid() and self.model_buf.buf != self.model_bytes:
                self.model_bytes = self.model_buf.buf
                self.provider_model = self.model_buf.take()
                self.changes += 1
        elif f == FINISH:
            # an invalid reason (empty, too long, not printable) leaves the held one
            if self.finish_buf.valid() and printable(self.finish_buf.buf):
                self.finish_held = self.finish_buf.buf
                self.finish_pending = True
        elif f == RESPONSE_ID and self.response_id is None:
            if self.id_buf.valid() and printable(self.id_buf.buf):
                self.response_id = self.id_buf.take()
                self.changes += 1

    def enter(self, mark: builtins.int) -> None:
        if mark == ERROR:
            self.errors += 1
        elif mark == USAGE_RESET:
            self.slots = [None] * SLOTS
        elif mark == SUM_RESET:
            for s in _SUMS:
                self.slots[s] = None
        elif mark == ROOT:
            self.doc += 1
        elif mark == FINAL and self.finish_doc is None:
            self.finish_doc = self.doc
