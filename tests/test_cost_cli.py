"""`llmtally cost` and `llmtally scan --pricing`, run as a user runs them; costs exact to the micro-dollar."""

import json
import os
import subprocess
import sys

import pytest

from conftest import FIXTURES

PRICES = """\
listen: 127.0.0.1:18080
pricing:
  models:
    every: {input: 2, cachedInput: 0.25, cacheWrite: 2.5, output: 8, reasoning: 10}
    tiered: {input: 2, cachedInput: 0.25, cacheWrite: 2.5, output: 8, reasoning: 10, tiers: [{above: 1000, input: 4}]}
    claude-opus-4-1: {input: 15, cachedInput: 1.5, cacheWrite: 18.75, output: 75}
  aliases: {my-deployment: every}
"""

#: LiteLLM's model_prices_and_context_window.json format (USD per token)
CATALOG = {
    "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "litellm_provider": "openai"},
    "o3-mini": {
        "input_cost_per_token": 1.1e-06,
        "output_cost_per_token": 4.4e-06,
        "cache_read_input_token_cost": 5.5e-07,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai", "mode": "image_generation"},
}

#: every kind of token: 1003 prompt = 501 fresh + 302 cache reads + 200 cache writes; 101 completion = 60 + 41
EVERY = {
    "prompt_tokens": 1003,
    "completion_tokens": 101,
    "cached_tokens": 302,
    "cache_write_tokens": 200,
    "reasoning_tokens": 41,
}


def llmtally(*args, stdin=None, env=None):
    environ = {k: v for k, v in os.environ.items() if k != "LLMTALLY_CONFIG"}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmtally.cli", *args], input=stdin, capture_output=True, env=environ)


@pytest.fixture
def prices(tmp_path):
    f = tmp_path / "prices.yaml"
    f.write_text(PRICES)
    return str(f)


@pytest.fixture
def catalog(tmp_path):
    f = tmp_path / "model_prices_and_context_window.json"
    f.write_text(json.dumps(CATALOG))
    return str(f)


def ok(r):
    assert (r.returncode, r.stderr) == (0, b""), r.stderr
    assert r.stdout.count(b"\n") == 1
    return json.loads(r.stdout)


#: EVERY at `every`'s prices: 501 x 2, 302 x 0.25, 200 x 2.5, 60 x 8, 41 x 10 = 2467.5 micro-dollars
EVERY_COST = {"input": 1002, "cached_input": 75.5, "cache_write": 500, "output": 480, "reasoning": 410}


@pytest.mark.parametrize(
    "model, priced_as, breakdown, micro",
    [
        ("every", "every", EVERY_COST, 2468),  # half up
        ("my-deployment", "every", EVERY_COST, 2468),  # an alias
        # 1003 prompt tokens > 1000: fresh input at 4 (the rest as below the tier)
        ("tiered", "tiered", {**EVERY_COST, "input": 2004}, 3470),
    ],
)
def test_cost_of_every_token_kind(prices, model, priced_as, breakdown, micro):
    got = ok(llmtally("cost", "--pricing", prices, "--model", model, "--usage", json.dumps(EVERY)))
    assert got == {
        "model": model,
        "priced_as": priced_as,
        "cost_usd": micro / 1_000_000,
        "cost_microusd": micro,
        "breakdown": breakdown,
    }
    assert sum(breakdown.values()) == pytest.approx(micro, abs=0.5)


def test_cost_prints_exact_numbers(prices):
    r = llmtally("cost", "--pricing", prices, "--model", "every", "--usage", '{"prompt_tokens": 1, "cached_tokens": 1}')
    assert r.stdout == (
        b'{"model": "every", "priced_as": "every", "cost_usd": 0, "cost_microusd": 0, '
        b'"breakdown": {"input": 0, "cached_input": 0.25, "cache_write": 0, "output": 0, "reasoning": 0}}\n'
    )
    r = llmtally("cost", "--pricing", prices, "--model", "every", "--usage", '{"completion_tokens": 1}')
    assert b'"cost_usd": 0.000008, "cost_microusd": 8,' in r.stdout


def test_cost_from_a_litellm_catalog(catalog):
    # o3-mini's reasoning at its output price: 30 x 1.1 + 44 x 4.4 + 256 x 4.4 = 1353
    usage = json.dumps({"prompt_tokens": 30, "completion_tokens": 300, "reasoning_tokens": 256})
    want = {"input": 33, "cached_input": 0, "cache_write": 0, "output": 193.6, "reasoning": 1126.4}
    got = ok(llmtally("cost", "--pricing", catalog, "--model", "o3-mini-2025-01-31", "--usage", usage))
    assert got == {
        "model": "o3-mini-2025-01-31",
        "priced_as": "o3-mini",
        "cost_usd": 0.001353,
        "cost_microusd": 1353,
        "breakdown": want,
    }
    # the provider-qualified entry (LiteLLM's litellm_provider), and cache reads at cache_read_input_token_cost
    usage = json.dumps({"prompt_tokens": 1000, "cached_tokens": 1000})
    got = ok(llmtally("cost", "--pricing", catalog, "--provider", "openai", "--model", "o3-mini", "--usage", usage))
    assert (got["priced_as"], got["cost_microusd"], got["breakdown"]["cached_input"]) == ("openai/o3-mini", 550, 550)


def test_scan_piped_into_cost(prices):
    # llmtally scan - < body | llmtally cost --pricing FILE --usage -
    with open(FIXTURES / "anthropic/messages_cache_thinking_tools.sse", "rb") as body:
        scan = subprocess.Popen(
            [sys.executable, "-m", "llmtally.cli", "scan", "--provider", "anthropic", "-"],
            stdin=body,
            stdout=subprocess.PIPE,
        )
        cost = subprocess.run(
            [sys.executable, "-m", "llmtally.cli", "cost", "--pricing", prices, "--usage", "-"],
            stdin=scan.stdout,
            capture_output=True,
        )
        scan.stdout.close()
        assert scan.wait() == 0
    # the model comes from the usage (claude-opus-4-1-20250805, a dated snapshot of claude-opus-4-1):
    # 12 fresh x 15 + 4096 reads x 1.5 + 2048 writes x 18.75 + 87 x 75
    got = ok(cost)
    assert got == {
        "model": "claude-opus-4-1-20250805",
        "priced_as": "claude-opus-4-1",
        "cost_usd": 0.051249,
        "cost_microusd": 51249,
        "breakdown": {"input": 180, "cached_input": 6144, "cache_write": 38400, "output": 6525, "reasoning": 0},
    }


def test_scan_with_pricing(prices):
    body = str(FIXTURES / "anthropic/messages_cache_thinking_tools.sse")
    plain = ok(llmtally("scan", "--provider", "anthropic", body))
    got = ok(llmtally("scan", "--provider", "anthropic", "--pricing", prices, body))
    assert got == {**plain, "cost_usd": 0.051249, "cost_microusd": 51249}
    # --model overrides: 12 x 2 + 4096 x 0.25 + 2048 x 2.5 + 87 x 8 = 6864
    got = ok(llmtally("scan", "--provider", "anthropic", "--pricing", prices, "--model", "my-deployment", body))
    assert got == {**plain, "cost_usd": 0.006864, "cost_microusd": 6864}
    # unpriced: the usage without a cost, and a warning
    r = llmtally("scan", "--pricing", prices, str(FIXTURES / "openai/chat.json"))
    assert r.returncode == 0 and "cost_usd" not in json.loads(r.stdout)
    assert r.stderr == b"llmtally: warning: model gpt-3.5-turbo-0125 is not in the price table: no cost_usd\n"


def test_unpriced_model_exits_1(prices, catalog):
    for table in (prices, catalog):
        r = llmtally("cost", "--pricing", table, "--model", "gpt-5", "--usage", '{"prompt_tokens": 10}')
        assert (r.returncode, r.stdout) == (1, b"")
        assert r.stderr.startswith(b"llmtally: error: model gpt-5 is not in the price table (")
        assert r.stderr.count(b"\n") == 1 and r.stderr.endswith(b")\n")


@pytest.mark.parametrize(
    "content, name, message",
    [
        (None, "missing.yaml", b"--pricing {path}: cannot read it (No such file or directory)"),
        ("pricing: [unclosed", "p.yaml", b"--pricing {path}: not valid YAML ("),
        ("listen: 127.0.0.1:1\n", "p.yaml", b"--pricing {path}: no pricing: section"),
        ("pricing:\n  models:\n    m: {input: 1}\n", "p.yaml", b"pricing.models.m: needs input and output"),
        ("pricing:\n  models:\n    m: {input: -1, output: 1}\n", "p.yaml", b"pricing.models.m.input: -1 must be"),
        ("pricing:\n  modles: {}\n", "p.yaml", b"pricing: expected a mapping with models, aliases and catalog"),
        ("pricing:\n  catalog: /nonexistent.json\n", "p.yaml", b"pricing.catalog /nonexistent.json: cannot read"),
        ("{not json", "c.json", b"--pricing {path}: not JSON ("),
        ("[1, 2]", "c.json", b"--pricing {path}: not a JSON object of models"),
        (None, "missing.json", b"--pricing {path}: cannot read it (No such file or directory)"),
    ],
)
def test_bad_pricing_file_one_line_exit_2(tmp_path, content, name, message):
    f = tmp_path / name
    if content is not None:
        f.write_text(content)
    for command in (["cost", "--model", "m", "--usage", "{}"], ["scan", str(FIXTURES / "openai/chat.json")]):
        r = llmtally(*command, "--pricing", str(f))
        assert (r.returncode, r.stdout) == (2, b""), command
        assert r.stderr.startswith(b"llmtally: error: ") and r.stderr.count(b"\n") == 1
        assert message.replace(b"{path}", str(f).encode()) in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--usage", "{prompt"], b"--usage is not JSON ("),
        (["--usage", "[1]"], b"--usage must be a JSON object"),
        (["--usage", '{"input_tokens": 1}'], b"--usage: unknown keys ['input_tokens']"),
        (["--usage", '{"prompt_tokens": -1}'], b"--usage: prompt_tokens must be a whole number of tokens from 0"),
        (["--usage", '{"prompt_tokens": 1.5}'], b"--usage: prompt_tokens must be a whole number"),
        (["--usage", '{"prompt_tokens": 1}', "--model", ""], b"no model: give --model"),
        (["--usage", "{}", "--model", "every", "--provider", "opneai"], b"unknown provider 'opneai'; known: bedrock"),
        (["--model", "every"], b"the following arguments are required: --usage"),
    ],
)
def test_bad_usage_one_line_exit_2(prices, args, message):
    r = llmtally("cost", "--pricing", prices, *args)
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr.startswith(b"llmtally: error: ") and r.stderr.count(b"\n") == 1
    assert message in r.stderr


def test_scan_model_needs_pricing():
    r = llmtally("scan", "--model", "gpt-4o", str(FIXTURES / "openai/chat.json"))
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr == b"llmtally: error: --model goes with --pricing (the model to price the usage as)\n"


def test_config_fallback(tmp_path, prices, catalog):
    usage = json.dumps(EVERY)
    # no table anywhere: say to give --pricing
    r = llmtally("cost", "--model", "every", "--usage", usage)
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr.startswith(b"llmtally: error: no price table: give --pricing FILE")
    assert r.stderr.count(b"\n") == 1
    # the configuration's pricing: section, by --config or LLMTALLY_CONFIG
    for args, env in ((["--config", prices], None), ([], {"LLMTALLY_CONFIG": prices})):
        got = ok(llmtally("cost", *args, "--model", "every", "--usage", usage, env=env))
        assert (got["priced_as"], got["cost_microusd"]) == ("every", 2468)
    # --pricing wins over the configuration
    got = ok(
        llmtally("cost", "--pricing", catalog, "--model", "o3-mini", "--usage", "{}", env={"LLMTALLY_CONFIG": prices})
    )
    assert got["priced_as"] == "o3-mini"
    # a configuration's catalog, under its own entries: the operator's o3-mini wins, the catalog's is still there
    config = tmp_path / "llmtally.yaml"
    config.write_text(f"pricing:\n  models:\n    o3-mini: {{input: 1, output: 2}}\n  catalog: {catalog}\n")
    got = ok(llmtally("cost", "--config", str(config), "--model", "o3-mini", "--usage", '{"prompt_tokens": 10}'))
    assert (got["priced_as"], got["cost_microusd"]) == ("o3-mini", 10)
    got = ok(
        llmtally(
            "cost",
            "--config",
            str(config),
            "--provider",
            "openai",
            "--model",
            "o3-mini",
            "--usage",
            '{"prompt_tokens": 10}',
        )
    )
    assert (got["priced_as"], got["cost_microusd"]) == ("o3-mini", 10)
    # a configuration without prices, or that cannot be read
    bare = tmp_path / "bare.yaml"
    bare.write_text("listen: 127.0.0.1:18080\n")
    for args, env, message in (
        (["--config", str(bare)], None, f"--config {bare}: no pricing: section"),
        ([], {"LLMTALLY_CONFIG": str(bare)}, f"LLMTALLY_CONFIG {bare}: no pricing: section"),
        (["--config", "/nonexistent.yaml"], None, "--config /nonexistent.yaml: cannot read it"),
    ):
        r = llmtally("cost", *args, "--model", "every", "--usage", usage, env=env)
        assert (r.returncode, r.stdout) == (2, b"")
        assert r.stderr.startswith(f"llmtally: error: {message}".encode()) and r.stderr.count(b"\n") == 1
