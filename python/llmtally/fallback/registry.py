"""Provider descriptors built from the generated registry (mirror of
rust/core/src/descriptor.rs and providers/mod.rs): `auto` detection, path
facts, and the JSON patterns of requests and responses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .data import CONSTANTS, DATA
from .json_scan import Arr, Leaf, Obj, Or, Pattern, Raw

MODEL_MAX = CONSTANTS["model_max"]

Cond = tuple[str, str]


def _pat(node: dict) -> Pattern:
    if "leaf" in node:
        return Leaf(node["leaf"])
    if "arr" in node:
        return Arr(_pat(node["arr"]))
    if "or" in node:
        return Or(*(_pat(a) for a in node["or"]))
    if "raw" in node:
        return Raw(node["raw"])
    kids: dict[str, Pattern] = {}
    for key, sub in node["obj"]:
        kids.setdefault(key, _pat(sub))  # the first of a repeated key wins, as in Rust
    return Obj(node["mark"], kids)


def holds(cond: Cond, path: str, content_type: str) -> bool:
    kind, s = cond
    if kind == "path_contains":
        return s in path
    if kind == "path_ends_with":
        return path.endswith(s)
    if kind == "content_type_starts_with":
        return content_type.startswith(s)
    return s in content_type  # content_type_contains


@dataclass(frozen=True, eq=False)
class Descriptor:
    id: str
    display: str
    detect: tuple[tuple[Cond, ...], ...]
    streams_by_path: tuple[Cond, ...]
    path_model_rule: dict | None
    prompt_adds_cache: bool
    completion_adds_reasoning: bool
    brace_framing: str
    nul_framing: str | None
    usage_headers: tuple[tuple[str, int], ...]
    body_markers: tuple[bytes, ...]
    request: Pattern
    response: Pattern
    inner: Pattern | None
    response_array: Pattern

    def path_model(self, path: str) -> str | None:
        """The model named by the path, where the API puts it there."""
        pm = self.path_model_rule
        if pm is None:
            return None
        path = path_only(path)
        at = path.rfind(pm["after"]) if pm["last"] else path.find(pm["after"])
        if at < 0:
            return None
        rest = path[at + len(pm["after"]) :]
        if pm["end"] == "last_slash":
            raw, sep, _ = rest.rpartition("/")
            if not sep:
                return None
        else:
            raw = rest.split(pm["end"], 1)[0]
        name = unquote(raw, errors="replace") if pm["percent_decoded"] else raw
        if not name or len(name.encode()) > MODEL_MAX:
            return None
        return name

    def path_streams(self, path: str) -> bool:
        """Whether the path alone says the request streams."""
        path = path_only(path)
        return any(holds(c, path, "") for c in self.streams_by_path)


_CONDS = {"path_contains", "path_ends_with", "content_type_starts_with", "content_type_contains"}
#: the framings this backend implements (a document may be sniffed as one of these)
_FRAMINGS = {"sse", "json", "ndjson", "eventstream"}


def _check(d: dict) -> None:
    """Refuse data this backend would misread (the core grew a kind the fallback lacks)."""
    conds = [c for rule in d["detect"] for c in rule] + list(d["streams_by_path"])
    bad = [k for k, _ in conds if k not in _CONDS] + [
        f for f in (d["brace_framing"], d["nul_framing"]) if f is not None and f not in _FRAMINGS
    ]
    if bad or (
        d["path_model"] is not None and len(d["path_model"]["end"]) != 1 and d["path_model"]["end"] != "last_slash"
    ):
        raise ValueError(f"registry.json: provider {d['id']!r} uses {bad or d['path_model']} unknown to the fallback")


def _descriptor(d: dict) -> Descriptor:
    _check(d)
    return Descriptor(
        id=d["id"],
        display=d["display"],
        detect=tuple(tuple((k, s) for k, s in rule) for rule in d["detect"]),
        streams_by_path=tuple((k, s) for k, s in d["streams_by_path"]),
        path_model_rule=d["path_model"],
        prompt_adds_cache=d["prompt_adds_cache"],
        completion_adds_reasoning=d["completion_adds_reasoning"],
        brace_framing=d["brace_framing"],
        nul_framing=d["nul_framing"],
        usage_headers=tuple((h, f) for h, f in d["usage_headers"]),
        body_markers=tuple(m.encode() for m in d["body_markers"]),
        request=_pat(d["request"]),
        response=_pat(d["response"]),
        response_array=_pat(d["response_array"]),
        inner=None if d["inner"] is None else _pat(d["inner"]),
    )


#: the framing a content type tells, first match wins
CONTENT_TYPES: tuple[tuple[Cond, str], ...] = tuple(((k, s), f) for (k, s), f in DATA["content_types"])
if any(k not in _CONDS for (k, _), _ in CONTENT_TYPES) or any(f not in _FRAMINGS for _, f in CONTENT_TYPES):
    raise ValueError("registry.json: a content type rule unknown to the fallback")

#: every provider, in `auto` detection order
ALL: tuple[Descriptor, ...] = tuple(_descriptor(d) for d in DATA["providers"])
_BY_ID = {d.id: d for d in ALL}
OPENAI = _BY_ID["openai"]
#: paths at which a provider serves another one's API: (rule, the ids it applies to, the API's id)
FOREIGN_PATHS: tuple[tuple[tuple[Cond, ...], frozenset[str], str], ...] = tuple(
    (tuple((c[0], c[1]) for c in rule), frozenset(ids), other) for rule, ids, other in DATA["foreign_paths"]
)


def path_only(path: str) -> str:
    return path.split("?", 1)[0]


# Rust's str::trim (Unicode White_Space) and to_ascii_lowercase, exactly
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _id(provider_id: str) -> str:
    return provider_id.strip(WHITE_SPACE).translate(_ASCII_LOWER)


def by_id(provider_id: str) -> Descriptor | None:
    return _BY_ID.get(_id(provider_id))


def detect(path: str, content_type: str = "") -> Descriptor:
    """`auto`: the first provider one of whose rules holds entirely."""
    path = path_only(path)
    ct = content_type.translate(_ASCII_LOWER)
    for d in ALL:
        if any(all(holds(c, path, ct) for c in rule) for rule in d.detect):
            return d
    return OPENAI


def sniff(head: bytes) -> Descriptor | None:
    """The provider the first bytes of a response show: a NUL first byte is an event
    stream; else the one whose marker appears earliest (registry order breaks ties)."""
    if head[:1] == b"\x00":
        return next((d for d in ALL if d.nul_framing is not None), None)
    best: tuple[int, Descriptor] | None = None
    for d in ALL:
        for m in d.body_markers:
            at = head.find(m)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, d)
    return None if best is None else best[1]


def resolve(provider_id: str, path: str = "", content_type: str = "") -> Descriptor:
    """A provider id; `auto` looks at the path and content type; unknown ids are OpenAI-compatible."""
    pid = _id(provider_id)
    if pid in ("auto", ""):
        return detect(path, content_type)
    d = _BY_ID.get(pid, OPENAI)
    path = path_only(path)
    for rule, ids, other in FOREIGN_PATHS:
        if d.id in ids and all(holds(c, path, "") for c in rule):
            return _BY_ID[other]
    return d
