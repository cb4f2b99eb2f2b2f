"""Usage numbers: what formats report and how they combine (mirror of usage.rs)."""

from __future__ import annotations

from .json_scan import Sink

# usage slots
INPUT, OUTPUT, TOTAL, CACHED, CACHE_WRITE, REASONING, EXTRA_INPUT = range(7)
SLOTS = 7
# other leaves and marks
MODEL = 16
ERROR = 17
STREAM = 18
INCLUDE_USAGE = 19
USAGE_RESET = 20  # mark: this usage object replaces all earlier usage
BYTES = 21  # a base64 string wrapping a nested document
ROOT, CHOICE, TOOL = 22, 23, 24  # marks: a document's root, a choice, a tool call
CHOICE_INDEX, TOOL_INDEX = 25, 26  # leaves naming the current choice / tool call
T_CONTENT, T_REFUSAL, T_REASONING, T_TOOL_NAME, T_TOOL_ARGS = 30, 31, 32, 33, 34  # output text kinds
R_MSG, R_TEXT, R_NAME = 40, 41, 42  # request: a chat message (mark), a counted string, a name


def is_text(f: int) -> bool:
    return T_CONTENT <= f <= T_TOOL_ARGS

MODEL_MAX = 256
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

    def take(self) -> str | None:
        if self.over or not self.buf:
            return None
        return self.buf.decode("utf-8", "replace")


def sat_add(a: int, b: int) -> int:
    return min(a + b, U64_MAX)


class UsageAcc(Sink):
    __slots__ = ("slots", "provider_model", "errors", "changes", "model_buf")

    def __init__(self):
        self.slots: list[int | None] = [None] * SLOTS
        self.provider_model: str | None = None
        self.errors = 0
        self.changes = 0  # grows whenever a reported number or the provider's model changes
        self.model_buf = ShortString()

    def reported(self) -> bool:
        return any(v is not None for v in self.slots)

    def _get(self, f: int) -> int:
        v = self.slots[f]
        return 0 if v is None else v

    def numbers(self, fmt) -> tuple[int, int, int, int, int]:
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

    def str_start(self, f: int) -> None:
        if f == MODEL:
            self.model_buf.start()

    def str_piece(self, f: int, s: bytes) -> None:
        if f == MODEL:
            self.model_buf.push(s)

    def str_end(self, f: int) -> None:
        if f == MODEL:
            m = self.model_buf.take()
            if m is not None and m != self.provider_model:
                self.provider_model = m
                self.changes += 1

    def enter(self, mark: int) -> None:
        if mark == ERROR:
            self.errors += 1
        elif mark == USAGE_RESET:
            self.slots = [None] * SLOTS
