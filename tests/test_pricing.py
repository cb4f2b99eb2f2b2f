"""Prices (`llmtally.pricing`): exact micro-dollar arithmetic for every token kind, tiers, name matching,
the operator's table and a LiteLLM-format catalog, and the same cost from both backends' usage."""

import json
from decimal import Decimal

import pytest

import llmtally
from llmtally._types import Usage
from llmtally.pricing import PricingError, candidates, microusd, parse_litellm, parse_table, rounded, table_of

TABLE = parse_table(
    {
        "models": {
            "gpt-4o": {"input": 2.5, "cachedInput": 1.25, "output": 10},
            "claude-sonnet-4-5": {"input": 3, "cachedInput": 0.3, "cacheWrite": 3.75, "output": 15},
            "o3": {"input": 2, "output": 8, "reasoning": 8},
            "gemini-2.5-pro": {"input": 1.25, "output": 10, "tiers": [{"above": 200000, "input": 2.5, "output": 15}]},
            "cheap": {"input": "0.075", "output": "0.3"},
        },
        "aliases": {"prod-chat": "gpt-4o"},
    }
)


def usage(prompt=0, completion=0, cached=0, writes=0, reasoning=0, model="m"):
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
        cache_write_tokens=writes,
        reasoning_tokens=reasoning,
        model=model,
    )


def cost(model, u, llm=""):
    return microusd(TABLE.find(model, llm)[1], u)


def test_every_token_kind_to_the_micro_dollar():
    # 1000 fresh x 2.5 + 0 cached + 500 out x 10 = 2500 + 5000 micro-dollars
    assert cost("gpt-4o", usage(1000, 500)) == 7500
    # cache reads at their discount: 600 fresh x 2.5 + 400 cached x 1.25 + 500 x 10
    assert cost("gpt-4o", usage(1000, 500, cached=400)) == 1500 + 500 + 5000
    # Anthropic: reads 0.3, writes at the 3.75 premium, fresh 3, out 15
    assert cost("claude-sonnet-4-5", usage(10_000, 100, cached=6000, writes=3000)) == 3000 + 1800 + 11250 + 1500
    # reasoning is part of completion, at the reasoning price (here = output)
    assert cost("o3", usage(100, 1000, reasoning=800)) == 200 + 200 * 8 + 800 * 8
    # fractional micro-dollars stay exact until rounded once, half up
    assert cost("cheap", usage(7, 1)) == Decimal("0.825")
    assert rounded(cost("cheap", usage(7, 1))) == 1 and rounded(cost("cheap", usage(6, 0))) == 0


def test_a_tier_above_a_prompt_size_prices_the_whole_call():
    assert cost("gemini-2.5-pro", usage(200_000, 1000)) == 200_000 * Decimal("1.25") + 10_000
    assert cost("gemini-2.5-pro", usage(200_001, 1000)) == 200_001 * Decimal("2.5") + 15_000


@pytest.mark.parametrize(
    ("model", "llm", "entry"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-2024-08-06", "openai", "gpt-4o"),  # a dated snapshot
        ("claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock", "claude-sonnet-4-5"),  # Bedrock's id
        ("claude-sonnet-4-5@20250929", "vertex-ai", "claude-sonnet-4-5"),  # Vertex's
        ("models/gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
        ("prod-chat", "azure", "gpt-4o"),  # an Azure deployment the operator mapped
    ],
)
def test_names_as_traffic_spells_them(model, llm, entry):
    assert TABLE.find(model, llm)[0] == entry


def test_unknown_models_are_not_priced():
    assert TABLE.find("gpt-5-made-up", "openai") is None and TABLE.find(None) is None


def test_provider_qualified_entries_win():
    t = parse_table({"models": {"gpt-4o": {"input": 2.5, "output": 10}, "azure/gpt-4o": {"input": 2.75, "output": 11}}})
    assert t.find("gpt-4o", "azure")[0] == "azure/gpt-4o" and t.find("gpt-4o", "openai")[0] == "gpt-4o"
    assert candidates("gpt-4o-2024-08-06", "openai") == [
        "openai/gpt-4o-2024-08-06",
        "gpt-4o-2024-08-06",
        "openai/gpt-4o",
        "gpt-4o",
    ]


CATALOG = {
    "sample_spec": {"input_cost_per_token": 0, "output_cost_per_token": 0},
    "gpt-4o": {
        "litellm_provider": "openai",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
        "mode": "chat",
    },
    "gemini/gemini-2.5-pro": {
        "litellm_provider": "gemini",
        "input_cost_per_token": 1.25e-06,
        "input_cost_per_token_above_200k_tokens": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_above_200k_tokens": 1.5e-05,
    },
    "claude-sonnet-4-5": {
        "litellm_provider": "anthropic",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
    },
    "dall-e-3": {"litellm_provider": "openai", "output_cost_per_image": 0.04},
}


def test_a_litellm_catalog_is_read_exactly(tmp_path):
    t = parse_litellm(CATALOG)
    assert sorted(t.prices) == [
        "anthropic/claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "gemini/gemini-2.5-pro",
        "gpt-4o",
        "openai/gpt-4o",
    ]
    r = t.prices["gpt-4o"].rates
    assert (r.input, r.output, r.cached_input, r.cache_write) == (Decimal("2.5"), Decimal("10"), Decimal("1.25"), None)
    name, price = t.find("models/gemini-2.5-pro", "gemini")
    assert name == "gemini/gemini-2.5-pro" and microusd(price, usage(300_000, 10)) == 750_000 + 150
    # the operator's entries win over the catalog's; the catalog fills the rest
    f = tmp_path / "prices.json"
    f.write_text(json.dumps(CATALOG))
    merged = table_of({"catalog": str(f), "models": {"gpt-4o": {"input": 2, "output": 8}}})
    assert merged.find("gpt-4o", "openai")[1].rates.input == 2 and merged.find("claude-sonnet-4-5-20250929")
    assert microusd(merged.find("claude-sonnet-4-5")[1], usage(1000, 10, cached=500, writes=100)) == (
        400 * 3 + 500 * Decimal("0.3") + 100 * Decimal("3.75") + 150
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"models": {"m": {"input": 1}}}, "pricing.models.m: needs input and output"),
        ({"models": {"m": {"input": -1, "output": 1}}}, "pricing.models.m.input: -1 must be from 0"),
        ({"models": {"m": {"input": "x", "output": 1}}}, "pricing.models.m.input: 'x' is not a number"),
        ({"models": {"m": {"input": 1, "output": 1, "cached": 1}}}, "pricing.models.m: unknown keys ['cached']"),
        ({"models": {"m": {"input": 1, "output": 1, "tiers": [{"input": 2}]}}}, "pricing.models.m.tiers[0]: needs"),
        ({"catalog": "/nonexistent/prices.json"}, "pricing.catalog /nonexistent/prices.json: cannot read it"),
    ],
)
def test_a_bad_price_is_one_line(doc, message):
    with pytest.raises(PricingError) as e:
        table_of(doc)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("backend", ["native", "python"])
def test_both_backends_usage_give_the_same_cost(backend):
    from conftest import CASES, load

    case = next(c for c in CASES if c["name"].startswith("anthropic") and c["usage"]["cache_write_tokens"])
    sc = llmtally.ResponseScanner("anthropic", content_type=case.get("content_type") or "", backend=backend)
    sc.feed(load(case["response"]))
    u = sc.finish()
    want = case["usage"]
    fresh = want["prompt_tokens"] - want["cached_tokens"] - want["cache_write_tokens"]
    assert cost("claude-sonnet-4-5", u) == (
        fresh * 3
        + want["cached_tokens"] * Decimal("0.3")
        + want["cache_write_tokens"] * Decimal("3.75")
        + want["completion_tokens"] * 15
    )


# -- through `llmtally serve`: cost in the metadata and the metrics --

PRICED = """pricing:
  models:
    gpt-3.5-turbo: {input: 0.5, output: 1.5}
    claude-opus-4-1: {input: 15, cachedInput: 1.5, cacheWrite: 18.75, output: 75}
"""


def test_cost_reaches_the_metadata_and_the_metrics_and_unpriced_models_are_counted(tmp_path):
    from conftest import CASES
    from test_serve import SEED_NONSTREAM, SEED_STREAM, Sidecar, case_messages, md_of, sample

    s = Sidecar(tmp_path, extra=PRICED)
    try:
        # the seed's stream: 21 prompt x 0.5 + 40 completion x 1.5 = 10.5 + 60 -> 71 micro-dollars (half up)
        final = md_of(s.process(case_messages(SEED_STREAM), provider="openai")[-1])["ai.gateway.kgateway.dev"]
        assert (final["cost_microusd"], final["cost_usd"]) == (71, 71e-6)
        ai = md_of(s.process(case_messages(SEED_NONSTREAM), provider="openai")[-1])["ai.gateway.kgateway.dev"]
        assert ai["cost_microusd"] == 44  # 21 x 0.5 + 22 x 1.5 = 43.5: half up
        anthropic = next(c for c in CASES if c["name"].startswith("anthropic") and c["usage"]["cache_write_tokens"])
        u = anthropic["usage"]
        want = rounded(  # claude-opus-4-1-20250805: the dated name priced as claude-opus-4-1
            (u["prompt_tokens"] - u["cached_tokens"] - u["cache_write_tokens"]) * Decimal(15)
            + u["cached_tokens"] * Decimal("1.5")
            + u["cache_write_tokens"] * Decimal("18.75")
            + u["completion_tokens"] * 75
        )
        md = md_of(s.process(case_messages(anthropic), provider="anthropic")[-1])["ai.gateway.kgateway.dev"]
        assert md["cost_microusd"] == want
        gemini = next(c for c in CASES if c["provider"] == "gemini" and c["usage"]["total_tokens"])
        for _ in range(2):  # no price: no cost field, counted, warned once
            md = md_of(s.process(case_messages(gemini), provider="gemini")[-1])["ai.gateway.kgateway.dev"]
            assert "cost_usd" not in md and "cost_microusd" not in md
        m = s.metrics()
        common = {"team": "unknown", "user": "unknown"}
        assert sample(m, "ai_cost_usd_total", llm="openai", model="gpt-3.5-turbo", **common) == pytest.approx(115e-6)
        unpriced = {k: v for k, v in m.items() if k[0] == "ai_unpriced_requests_total"}
        assert list(unpriced.values()) == [2] and dict(next(iter(unpriced))[1])["llm"] == "gemini"
    finally:
        s.stop()
    assert s.log.read_text().count("has no price in the pricing table") == 1


def test_dates_are_dates_and_vendors_are_bedrocks():
    assert candidates("gpt-4-0613") == ["gpt-4-0613", "gpt-4"]
    assert candidates("llama3-70b-8192") == ["llama3-70b-8192"]  # Groq's context size, not a date
    assert candidates("command-r-08-2024") == ["command-r-08-2024"]  # Cohere's month-year
    assert candidates("my.fine-tune-v2") == ["my.fine-tune-v2"]  # a dot is not a Bedrock vendor
    assert candidates("meta.llama3-1-70b-instruct-v1:0")[-1] == "llama3-1-70b-instruct"


def test_an_exact_catalog_price_beats_an_undated_entry_of_the_operator():
    own = parse_table({"models": {"gpt-4o": {"input": 2.5, "output": 10}}})
    catalog = parse_litellm({"gpt-4o-2024-05-13": {"input_cost_per_token": 5e-06, "output_cost_per_token": 1.5e-05}})
    t = own.merged_over(catalog)
    assert t.find("gpt-4o-2024-05-13", "openai")[0] == "gpt-4o-2024-05-13"
    assert t.find("gpt-4o-2024-08-06", "openai")[0] == "gpt-4o"


def test_absurd_catalog_prices_are_left_out_and_a_call_is_never_lost_to_its_price():
    t = parse_litellm(
        {
            "huge": {"input_cost_per_token": 1e25, "output_cost_per_token": 1e-06},
            "ok": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 2e-06,
                "input_cost_per_token_above_" + "9" * 5000 + "k_tokens": 1e-06,
            },
        }
    )
    assert sorted(t.prices) == ["ok"] and t.prices["ok"].tiers == ()
    assert rounded(microusd(t.prices["ok"].rates and t.prices["ok"], usage(10**19, 10**19))) == 3 * 10**19
