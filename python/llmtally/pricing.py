"""What a call cost, in US dollars: a price table per model, matched the way real traffic names models, applied
to every kind of token a `Usage` reports.

Prices are USD per million tokens, held as `Decimal`, so that a cost is exact: one USD per million tokens is
one micro-dollar per token, and `cost_microusd` is the sum of tokens x price, rounded half up once. The table
is the operator's own entries (`pricing.models`) over an optional catalog file in LiteLLM's
`model_prices_and_context_window.json` format (`pricing.catalog`), read at start; nothing is fetched.

Which token is which (see docs/providers.md, "Usage"): `prompt_tokens` include the cache reads
(`cached_tokens`) and writes (`cache_write_tokens`); `completion_tokens` include `reasoning_tokens`. So:

    fresh input x input + cache reads x cached_input + cache writes x cache_write
      + (completion - reasoning) x output + reasoning x reasoning

with cached_input, cache_write and reasoning defaulting to input, input and output where a model does not
price them apart, and another set of prices (a tier) when the prompt is larger than a threshold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from ._types import Usage

MILLION = Decimal(1_000_000)
#: the largest price taken, USD per million tokens (from the table or a catalog)
PRICE_MAX = Decimal(1_000_000)
_WIDE = Context(prec=60)
#: the price kinds, as written in the configuration (USD per million tokens)
KINDS = ("input", "cachedInput", "cacheWrite", "output", "reasoning")


class PricingError(ValueError):
    """A price table or catalog that cannot be read; the message names the entry."""


@dataclass(frozen=True)
class Rates:
    """USD per million tokens; None: priced as input (cachedInput, cacheWrite) or as output (reasoning)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True)
class Price:
    rates: Rates
    #: (prompt tokens above which, the rates then), rising thresholds
    tiers: tuple[tuple[int, Rates], ...] = ()

    def rates_for(self, prompt_tokens: int) -> Rates:
        r = self.rates
        for above, tier in self.tiers:
            if prompt_tokens > above:
                r = tier
        return r


def breakdown(price: Price, u: Usage) -> dict[str, Decimal]:
    """The exact cost of `u` in micro-dollars (not rounded) per kind of token: `input` (fresh input),
    `cached_input` (cache reads), `cache_write`, `output` (less reasoning) and `reasoning`."""
    r = price.rates_for(u.prompt_tokens)
    cached = min(u.cached_tokens, u.prompt_tokens)
    writes = min(u.cache_write_tokens, u.prompt_tokens - cached)
    fresh = u.prompt_tokens - cached - writes
    reasoning = min(u.reasoning_tokens, u.completion_tokens)
    return {
        "input": fresh * r.input,
        "cached_input": cached * (r.cached_input if r.cached_input is not None else r.input),
        "cache_write": writes * (r.cache_write if r.cache_write is not None else r.input),
        "output": (u.completion_tokens - reasoning) * r.output,
        "reasoning": reasoning * (r.reasoning if r.reasoning is not None else r.output),
    }


def microusd(price: Price, u: Usage) -> Decimal:
    """The exact cost of `u` in micro-dollars (not rounded): the sum of its `breakdown`."""
    return sum(breakdown(price, u).values(), Decimal(0))


def rounded(micro: Decimal) -> int:
    """Whole micro-dollars, half up (in a context wide enough for any count of tokens at any price allowed)."""
    return int(micro.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_WIDE))


# -- matching --

#: Bedrock's cross-region inference prefixes (`us.anthropic.claude-...`)
_REGION = re.compile(r"^(?:us|eu|apac|us-gov|ca|jp|au|global)\.")
#: a Bedrock vendor prefix before the model (`anthropic.claude-...`): the vendors Bedrock names
_VENDOR = re.compile(
    r"^(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|writer|qwen|openai|stability|twelvelabs|luma)\."
)
#: Bedrock's version suffix (`-v2:0`, `-v1`, `:0`)
_VERSION = re.compile(r"(?:-v[0-9]+)?(?::[0-9]+)?$")
#: a dated snapshot: `-2024-08-06`, `-20241022`, `@20241022`, OpenAI's `-0613` (a month and a day: not
#: Groq's `-8192` context size, nor Cohere's `-08-2024`)
_DATE = re.compile(
    r"(?:[-@]20[0-9]{2}-[01][0-9]-[0-3][0-9]|[-@]20[0-9]{2}[01][0-9][0-3][0-9]|-(?:0[1-9]|1[0-2])(?:[0-2][0-9]|3[01]))$"
)


#: how catalogs spell a provider id (LiteLLM: `vertex_ai/...`)
_CATALOG_PREFIXES = {"vertex-ai": ("vertex-ai", "vertex_ai"), "cohere": ("cohere", "cohere_chat")}


def variants(model: str) -> list[str]:
    """A model's names, most specific first: as given, without Gemini's `models/`, without Bedrock's region,
    vendor and version (names with a Bedrock vendor only), without a date."""
    names = [model]
    if model.startswith("models/"):
        names.append(model[len("models/") :])
    for name in list(names):
        bare = _REGION.sub("", name)
        if _VENDOR.match(bare):
            names.append(_VERSION.sub("", _VENDOR.sub("", bare)))
    for name in list(names):
        names.append(_DATE.sub("", name))
    out: list[str] = []
    for n in names:
        if n and n not in out:
            out.append(n)
    return out


def candidates(model: str, llm: str = "") -> list[str]:
    """The names a model is looked up by, most specific first: each variant provider-qualified, then as is."""
    prefixes = _CATALOG_PREFIXES.get(llm, (llm,)) if llm else ()
    out: list[str] = []
    for name in variants(model):
        for n in (*(f"{p}/{name}" for p in prefixes), name):
            if n not in out:
                out.append(n)
    return out


_UNSEEN = object()


class PriceTable:
    """Prices by model name; `aliases` map an operator's names (Azure deployments) to a priced model. A table
    merged over a catalog looks in its own entries first, with every spelling of the name, then in the
    catalog's: the operator's `gpt-4o` wins over the catalog's `openai/gpt-4o`."""

    def __init__(
        self, prices: Mapping[str, Price], aliases: Mapping[str, str] | None = None, under: PriceTable | None = None
    ):
        self.prices = dict(prices)
        self.aliases = dict(aliases or {})
        self.under = under
        self._found: dict[tuple[str | None, str | None, str], object] = {}

    def find(self, model: str | None, llm: str = "") -> tuple[str, Price] | None:
        """(the entry's name, its price) for a model, or None: not priced. Variant by variant, most specific
        first; within one, this table's entries before the catalog's: an exact dated name in the catalog
        beats an undated one of the operator's, and the operator's `gpt-4o` beats the catalog's
        `openai/gpt-4o`."""
        if not model:
            return None
        model = self.aliases.get(model, model)
        prefixes = _CATALOG_PREFIXES.get(llm, (llm,)) if llm else ()
        layers = [t.prices for t in self._layers()]
        for name in variants(model):
            names = (*(f"{p}/{name}" for p in prefixes), name)
            for prices in layers:
                for n in names:
                    p = prices.get(n)
                    if p is not None:
                        return n, p
        return None

    def _layers(self) -> list[PriceTable]:
        out: list[PriceTable] = []
        t: PriceTable | None = self
        while t is not None:
            out.append(t)
            t = t.under
        return out

    def cost(self, u: Usage, llm: str = "") -> tuple[str, int] | None:
        """(the entry that priced it, whole micro-dollars) of a call, or None: not priced. The provider's own
        name for the model answers first (a dated snapshot may be priced apart), then the request's. Lookups
        are remembered (bounded: model names come from clients)."""
        key = (u.provider_model, u.model, llm)
        found = self._found.get(key, _UNSEEN)  # one read: other threads may clear the dict meanwhile
        if found is _UNSEEN:
            found = self.find(u.provider_model, llm) if u.provider_model else None
            found = found or self.find(u.model, llm)
            if len(self._found) >= 10_000:
                self._found.clear()
            self._found[key] = found
        if found is None or found is _UNSEEN:
            return None
        name, price = cast("tuple[str, Price]", found)
        return name, rounded(microusd(price, u))

    def merged_over(self, catalog: PriceTable) -> PriceTable:
        """This table over `catalog` (the operator's own entries win)."""
        return PriceTable(self.prices, self.aliases, under=catalog)

    def __len__(self) -> int:
        return len(self.prices) + (len(self.under) if self.under is not None else 0)


# -- reading them --


def _usd(where: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PricingError(f"{where}: {value!r} is not a number of USD per million tokens")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise PricingError(f"{where}: {value!r} is not a number of USD per million tokens") from None
    if not d.is_finite() or d < 0 or d > 1_000_000:
        raise PricingError(f"{where}: {value!r} must be from 0 to 1000000 (USD per million tokens)")
    return d


def _rates(where: str, doc: Mapping[str, object]) -> Rates:
    unknown = set(doc) - set(KINDS) - {"tiers"}
    if unknown:
        raise PricingError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(KINDS)}, tiers)")
    if "input" not in doc or "output" not in doc:
        raise PricingError(f"{where}: needs input and output (USD per million tokens)")

    def opt(k: str) -> Decimal | None:
        return _usd(f"{where}.{k}", doc[k]) if k in doc else None

    return Rates(
        _usd(f"{where}.input", doc["input"]),
        _usd(f"{where}.output", doc["output"]),
        opt("cachedInput"),
        opt("cacheWrite"),
        opt("reasoning"),
    )


def parse_table(doc: object, where: str = "pricing") -> PriceTable:
    """The `pricing:` section's `models` and `aliases`:

    models:
      gpt-4o: {input: 2.5, cachedInput: 1.25, output: 10}
      gemini-2.5-pro: {input: 1.25, output: 10, tiers: [{above: 200000, input: 2.5, output: 15}]}
    aliases: {my-azure-deployment: gpt-4o}
    """
    if doc is None:
        return PriceTable({})
    if not isinstance(doc, Mapping) or set(doc) - {"models", "aliases", "catalog"}:
        raise PricingError(f"{where}: expected a mapping with models, aliases and catalog")
    models = doc.get("models") or {}
    if not isinstance(models, Mapping):
        raise PricingError(f"{where}.models: must map model names to prices")
    prices: dict[str, Price] = {}
    for name, entry in models.items():
        w = f"{where}.models.{name}"
        if not isinstance(name, str) or not name or not isinstance(entry, Mapping):
            raise PricingError(f"{w}: must be a model name with its prices")
        rates = _rates(w, entry)
        tiers: list[tuple[int, Rates]] = []
        for i, tier in enumerate(entry.get("tiers") or []):
            tw = f"{w}.tiers[{i}]"
            if not isinstance(tier, Mapping) or not isinstance(tier.get("above"), int) or tier["above"] < 0:
                raise PricingError(f"{tw}: needs above (prompt tokens) and the prices above it")
            rest = {k: v for k, v in tier.items() if k != "above"}
            # a tier repeats only what changes: the rest as below it
            base = {k: v for k, v in entry.items() if k in KINDS}
            tiers.append((tier["above"], _rates(tw, {**base, **rest})))
        if [t[0] for t in tiers] != sorted({t[0] for t in tiers}):
            raise PricingError(f"{w}.tiers: thresholds must rise")
        prices[name] = Price(rates, tuple(tiers))
    aliases = doc.get("aliases") or {}
    if not isinstance(aliases, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise PricingError(f"{where}.aliases: must map names to priced model names")
    return PriceTable(prices, aliases)


#: LiteLLM's per-token fields -> ours (USD per token there, per million here)
_LITELLM = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cachedInput",
    "cache_creation_input_token_cost": "cacheWrite",
    "output_cost_per_reasoning_token": "reasoning",
}
_ABOVE = re.compile(r"^(.+)_above_([0-9]{1,7})k_tokens$")


def _per_million(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        d = Decimal(str(value)) * MILLION
    except InvalidOperation:
        return None
    return d.normalize() if d.is_finite() and 0 <= d <= PRICE_MAX else None


def _litellm_rates(entry: Mapping[str, object], suffix: str = "") -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for field, kind in _LITELLM.items():
        v = _per_million(entry.get(field + suffix))
        if v is not None:
            out[kind] = v
    return out


def parse_litellm(doc: object, source: str = "catalog") -> PriceTable:
    """A LiteLLM `model_prices_and_context_window.json` document: every entry with input and output prices
    per token becomes an entry here, under its own key (`gpt-4o`, `azure/gpt-4o`, `bedrock/...`) and, when its
    key has no provider prefix, under `{litellm_provider}/{key}` too. Entries without both prices (images,
    audio, the `sample_spec` template) are left out; tiers come from the `..._above_{N}k_tokens` fields."""
    if not isinstance(doc, Mapping):
        raise PricingError(f"{source}: not a JSON object of models")
    prices: dict[str, Price] = {}
    for key, entry in doc.items():
        if not isinstance(key, str) or not isinstance(entry, Mapping) or key == "sample_spec":
            continue
        base = _litellm_rates(entry)
        if "input" not in base or "output" not in base:
            continue
        thresholds = sorted({int(m[2]) for f in entry if (m := _ABOVE.match(f)) and m[1] in _LITELLM})
        tiers = []
        for k in thresholds:
            above = _litellm_rates(entry, f"_above_{k}k_tokens")
            tiers.append((k * 1000, _fields({**base, **above})))
        price = Price(_fields(base), tuple(tiers))
        prices[key] = price
        provider = entry.get("litellm_provider")
        if isinstance(provider, str) and "/" not in key:
            prices.setdefault(f"{provider}/{key}", price)
    return PriceTable(prices)


def _fields(kinds: Mapping[str, Decimal]) -> Rates:
    return Rates(
        kinds["input"], kinds["output"], kinds.get("cachedInput"), kinds.get("cacheWrite"), kinds.get("reasoning")
    )


def load_catalog(path: str) -> PriceTable:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise PricingError(f"pricing.catalog {path}: cannot read it ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise PricingError(f"pricing.catalog {path}: not JSON ({' '.join(str(e).split())})") from None
    return parse_litellm(doc, f"pricing.catalog {path}")


def table_of(doc: object) -> PriceTable | None:
    """The price table of a `pricing:` section (its catalog read and merged under its models), None if none."""
    if doc is None:
        return None
    table = parse_table(doc)
    catalog = doc.get("catalog") if isinstance(doc, Mapping) else None
    if catalog is not None:
        if not isinstance(catalog, str) or not catalog:
            raise PricingError("pricing.catalog: must be the path of a LiteLLM-format JSON file")
        table = table.merged_over(load_catalog(catalog))
    return table


__all__ = [
    "Price",
    "PriceTable",
    "PricingError",
    "Rates",
    "breakdown",
    "candidates",
    "load_catalog",
    "microusd",
    "parse_litellm",
    "parse_table",
    "rounded",
    "table_of",
]
