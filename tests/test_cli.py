"""The llmtally command line, run as a user runs it."""

import json
import subprocess
import sys

import pytest

import llmtally as llmtally_pkg
import oracle
from conftest import CASES, FIXTURES, usage_of_json


def llmtally(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "llmtally.cli", *args], input=stdin, capture_output=True)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_scan_prints_usage(case, backend):
    # the command line refuses ids it does not know (the API reads them as OpenAI-compatible)
    provider = case["provider"] if case["provider"] in llmtally_pkg.PROVIDERS else "openai"
    args = ["scan", "--provider", provider, "--backend", backend]
    if "request" in case:
        args += ["--request", str(FIXTURES / case["request"])]
    if case.get("path"):
        args += ["--path", case["path"]]
    if case.get("content_type"):
        args += ["--content-type", case["content_type"]]
    for name, value in (case.get("headers") or {}).items():
        args += ["--header", f"{name}: {value}"]
    r = llmtally(*args, str(FIXTURES / case["response"]))
    assert r.returncode == 0, r.stderr
    assert usage_of_json(json.loads(r.stdout)) == case["usage"]
    assert r.stdout.count(b"\n") == 1


def test_scan_from_stdin():
    body = (FIXTURES / "openai/chat.json").read_bytes()
    r = llmtally("scan", "--provider", "openai", "-", stdin=body)
    assert r.returncode == 0
    assert json.loads(r.stdout)["total_tokens"] == 43


@pytest.mark.parametrize(
    "args, message",
    [
        (["scan", "/nonexistent/file"], b"No such file or directory"),
        (["scan", "--backend", "gpu", "x"], b"invalid choice"),
        (["scan", "--request", "/nonexistent", str(FIXTURES / "openai/chat.json")], b"No such file"),
        (["frobnicate"], b"invalid choice"),
        ([], b"required"),
        (["scan", "--provider", "gemnii", "x"], b"unknown provider 'gemnii'; known: bedrock, vertex-ai, gemini"),
        (["scan", "--header", "no colon", str(FIXTURES / "openai/chat.json")], b"is not 'Name: value'"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, message):
    r = llmtally(*args)
    assert r.returncode == 2
    assert r.stdout == b""
    assert r.stderr.count(b"\n") == 1 and r.stderr.startswith(b"llmtally: error: ")
    assert message in r.stderr


def test_count_cli(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Please explain the movie Dr. Strangelove in 1 sentence.")

    def run(*a, **kw):
        return subprocess.run([sys.executable, "-m", "llmtally.cli", "count", *a], capture_output=True, **kw)

    want = oracle.count(f.read_text(), "cl100k_base")
    r = run("--model", "gpt-3.5-turbo", str(f))
    assert (r.returncode, r.stdout) == (0, f"{want}\n".encode())
    r = run("--encoding", "o200k_base", "-", input=f.read_bytes())
    assert (r.returncode, r.stdout) == (0, f"{oracle.count(f.read_text(), 'o200k_base')}\n".encode())
    r = run("--encoding", "r50k_base", str(f))
    assert r.returncode == 2 and r.stderr.startswith(b"llmtally: error: ")
    r = run("--model", "x", "--encoding", "o200k_base", str(f))
    assert r.returncode == 2 and b"not allowed with" in r.stderr


def test_scan_detects_the_format_from_the_bytes():
    """No provider and no path: the body's own markers decide; the result equals the case's (cases whose
    path tells the model or the streaming flag are left out: without the path those differ)."""
    sniffable = [
        c
        for c in CASES
        if c["provider"] in ("anthropic", "gemini", "bedrock", "cohere", "ollama", "auto") and "path" not in c
    ]
    assert len(sniffable) >= 6
    for case in sniffable:
        args = ["scan"]
        if case.get("content_type"):
            args += ["--content-type", case["content_type"]]
        if "request" in case:
            args += ["--request", str(FIXTURES / case["request"])]
        for name, value in (case.get("headers") or {}).items():
            args += ["--header", f"{name}: {value}"]
        r = llmtally(*args, str(FIXTURES / case["response"]))
        assert (r.returncode, usage_of_json(json.loads(r.stdout))) == (0, case["usage"]), case["name"]


def test_scan_warns_when_it_finds_nothing(tmp_path):
    f = tmp_path / "body.txt"
    f.write_bytes(b"<html>502 Bad Gateway</html>")
    r = llmtally("scan", str(f))
    assert r.returncode == 0 and json.loads(r.stdout)["source"] == "none"
    assert r.stderr.decode().startswith(f"llmtally: warning: no usage and no text found in {f} read as openai")
    assert r.stderr.count(b"\n") == 1
    r = llmtally("scan", str(FIXTURES / "openai/chat.json"))
    assert r.stderr == b""


def test_version_names_the_release_and_the_backend():
    import subprocess
    import sys

    import llmtally

    r = subprocess.run([sys.executable, "-m", "llmtally.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == f"llmtally {llmtally.__version__} ({llmtally.backend()} backend)\n"
    from importlib.metadata import version

    assert llmtally.__version__ == version("llmtally")
