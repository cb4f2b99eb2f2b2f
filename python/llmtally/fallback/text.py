"""Output text counted while it streams (mirror of rust/core/src/text.rs)."""

from __future__ import annotations

from .data import CONSTANTS
from .tokens import TextCounter, encoding_for, encoding_for_model
from .usage import CHOICE, CHOICE_INDEX, ROOT, TOOL, TOOL_INDEX, is_reasoning

MAX_TEXTS = CONSTANTS["max_texts"]
LAZY_BYTES = CONSTANTS["count_lazy_bytes"]


class TextState:
    __slots__ = ("model", "enc", "texts", "keys", "choice", "choice_pos", "tool", "tool_pos", "cur", "fresh", "changes")

    def __init__(self, model: str | None):
        self.model = model
        self.enc: str | None = None
        self.texts: list[TextCounter] = []
        self.keys: list[tuple[int, int, int]] = []  # (choice, tool, field) of each text
        self.choice = self.choice_pos = self.tool = self.tool_pos = 0
        self.cur: int | None = None
        self.fresh = 0  # text bytes pushed since the last sweep (LAZY_BYTES, text.rs)
        self.changes = 0  # grows with every text begun and every piece of text counted

    def enter(self, mark: int) -> None:
        if mark == ROOT:
            self.choice = self.choice_pos = self.tool = self.tool_pos = 0
        elif mark == CHOICE:
            self.choice = self.choice_pos
            self.choice_pos += 1
            self.tool = self.tool_pos = 0
        elif mark == TOOL:
            self.tool = self.tool_pos
            self.tool_pos += 1

    def index(self, f: int, v: int) -> None:
        if f == CHOICE_INDEX:
            self.choice = v
        elif f == TOOL_INDEX:
            self.tool = v

    def start(self, f: int, provider_model: str | None) -> None:
        if self.enc is None:
            # the request model's, else (a name without a public tokenizer: an Azure deployment's) the provider's
            known = self.model is not None and encoding_for_model(self.model) is not None
            self.enc = encoding_for(self.model if known else provider_model)
        key = (self.choice, self.tool, f)
        try:
            i = self.keys.index(key)
        except ValueError:
            if len(self.texts) < MAX_TEXTS:
                self.keys.append(key)
                self.texts.append(TextCounter(self.enc))
                i = len(self.texts) - 1
            else:
                i = MAX_TEXTS - 1
        self.cur = i
        self.changes += 1

    def piece(self, s: bytes) -> None:
        if self.cur is not None:
            self.texts[self.cur].push_held(s)
            self.changes += 1
            self.fresh += len(s)
            if self.fresh >= LAZY_BYTES:
                self.fresh = 0
                for c in self.texts:
                    c.settle_due()

    def settle(self) -> None:
        self.fresh = 0
        for c in self.texts:
            c.settle_now()

    def end(self) -> None:
        self.cur = None

    def seen(self) -> bool:
        return bool(self.texts)

    def totals(self, exact: bool) -> tuple[int, int]:
        """(all output tokens, reasoning tokens); `exact`: else each text's `total_soon` (a snapshot's).
        Reasoning sent under several names for one choice (and tool call) counts once: the largest."""
        counts = [c.total() if exact else c.total_soon() for c in self.texts]
        other = 0
        most: dict[tuple[int, int], int] = {}
        for (choice, tool, f), n in zip(self.keys, counts, strict=True):
            if is_reasoning(f):
                most[(choice, tool)] = max(most.get((choice, tool), 0), n)
            else:
                other += n
        reasoning = min(sum(most.values()), (1 << 64) - 1)
        return min(other + reasoning, (1 << 64) - 1), reasoning
