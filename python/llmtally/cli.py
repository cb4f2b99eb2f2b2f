"""The ``llmtally`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from . import (
    BACKENDS,
    ENCODINGS,
    PROVIDERS,
    RequestInfo,
    ResponseScanner,
    Usage,
    count_tokens,
    parse_request,
    sniff_provider,
)

if TYPE_CHECKING:
    from .pricing import Price, PriceTable

CHUNK = 64 * 1024


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"llmtally: error: {message}\n")


def _open(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def _headers(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {v!r} is not 'Name: value'")
        out.append((name.strip(), value.strip()))
    return out


def _scan(args: argparse.Namespace) -> int:
    provider = args.provider.strip().lower()
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {args.provider!r}; known: {', '.join(PROVIDERS)}")
    if args.model and not args.pricing:
        raise ValueError("--model goes with --pricing (the model to price the usage as)")
    table = _read_pricing(args.pricing) if args.pricing else None  # a bad table: before reading the body
    f = _open(args.response)
    try:
        head = f.read(CHUNK)
        how = ""
        if provider == "auto" and not args.path and not args.content_encoding:
            sniffed = sniff_provider(head, backend=args.backend)  # the bytes tell where a path would
            if sniffed is not None:
                provider, how = sniffed, " (detected from the body)"
        request: RequestInfo | None = None
        if args.request:
            with open(args.request, "rb") as rf:
                request = parse_request(rf.read(), provider, args.path)
        sc = ResponseScanner(
            provider,
            request,
            content_type=args.content_type,
            content_encoding=args.content_encoding,
            path=args.path,
            headers=_headers(args.header),
            backend=args.backend,
        )
        chunk = head
        while chunk:
            sc.feed(chunk)
            chunk = f.read(CHUNK)
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    u = sc.finish()
    out = u.as_dict()
    raw: dict[str, str] = {}
    if table is not None:
        from .pricing import microusd, rounded

        models = [args.model] if args.model else list(dict.fromkeys(m for m in (u.provider_model, u.model) if m))
        found = _find(table, models, sc.provider)
        if found is None:
            why = f"model {models[0]} is not in the price table" if models else "no model to price (give --model)"
            print(f"llmtally: warning: {why}: no cost_usd", file=sys.stderr)
        else:
            micro = rounded(microusd(found[2], u))
            raw = {"cost_usd": _number(Decimal(micro) / 1_000_000), "cost_microusd": str(micro)}
    print(_dumps(out, raw))
    if u.source == "none":
        print(
            f"llmtally: warning: no usage and no text found in {args.response} read as {sc.provider}{how}, "
            f"framing {sc.framing or 'undecided'}; give --provider, --path or --content-type if that is wrong",
            file=sys.stderr,
        )
    return 0


# -- prices --


def _read_pricing(path: str, what: str = "--pricing") -> PriceTable:
    """The price table of a file: a LiteLLM-format catalog (.json), else YAML with a `pricing:` section."""
    from .pricing import PricingError, load_catalog, table_of

    if path.lower().endswith(".json"):
        try:
            return load_catalog(path)
        except PricingError as e:
            raise ValueError(f"{what} {e.args[0].removeprefix('pricing.catalog ')}") from None
    try:
        import yaml
    except ImportError:
        raise ValueError("PyYAML is missing, for a YAML price table; pip install 'llmtally[serve]'") from None
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"{what} {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path}: not UTF-8 text") from None
    except yaml.YAMLError as e:  # PyYAML's message spans lines: one line of it
        raise ValueError(f"{what} {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(doc, dict) or doc.get("pricing") is None:
        raise ValueError(f"{what} {path}: no pricing: section (or give a LiteLLM-format .json catalog)")
    try:
        table = table_of(doc["pricing"])
    except PricingError as e:
        raise ValueError(f"{what} {path}: {e}") from None
    assert table is not None
    return table


def _find(table: PriceTable, models: list[str], llm: str) -> tuple[str, str, Price] | None:
    """(the model, the entry that priced it, its price) for the first of `models` the table prices."""
    for model in models:
        found = table.find(model, llm)
        if found is not None:
            return model, found[0], found[1]
    return None


def _number(d: Decimal) -> str:
    """A Decimal as an exact JSON number."""
    return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")


def _dumps(obj: Mapping[str, object], raw: Mapping[str, str]) -> str:
    """`obj` as JSON, followed by `raw`'s members (JSON text: exact numbers)."""
    text = json.dumps(obj)
    if not raw:
        return text
    more = ", ".join(f"{json.dumps(k)}: {v}" for k, v in raw.items())
    return f"{text[:-1]}, {more}}}" if obj else f"{{{more}}}"


_USAGE_INTS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def _usage(text: str) -> Usage:
    """A `Usage` from its JSON (as `llmtally scan` prints it)."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--usage is not JSON ({' '.join(str(e).split())})") from None
    if not isinstance(doc, dict):
        raise ValueError(
            '--usage must be a JSON object of token counts, e.g. {"prompt_tokens": 1000, "completion_tokens": 200}'
        )
    # what `llmtally scan` prints beside the counts and names is read past (prices need none of it)
    known = (
        *_USAGE_INTS,
        "model",
        "provider_model",
        "streaming",
        "source",
        "cost_usd",
        "cost_microusd",
        "response_id",
        "finish_reasons",
    )
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ValueError(f"--usage: unknown keys {unknown} (known: {', '.join(_USAGE_INTS)})")
    counts: dict[str, int] = {}
    for k in _USAGE_INTS:
        v = doc.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"--usage: {k} must be a whole number of tokens from 0, not {v!r}")
        counts[k] = v
    names = {k: doc.get(k) for k in ("model", "provider_model")}
    for k, v in names.items():
        if v is not None and not isinstance(v, str):
            raise ValueError(f"--usage: {k} must be a string, not {v!r}")
    return Usage(
        prompt_tokens=counts["prompt_tokens"],
        completion_tokens=counts["completion_tokens"],
        total_tokens=counts["total_tokens"],
        cached_tokens=counts["cached_tokens"],
        cache_write_tokens=counts["cache_write_tokens"],
        reasoning_tokens=counts["reasoning_tokens"],
        model=names["model"],
        provider_model=names["provider_model"],
    )


def _cost(args: argparse.Namespace) -> int:
    from .pricing import breakdown, microusd, rounded

    llm = (args.provider or "").strip().lower()
    if llm and (llm not in PROVIDERS or llm == "auto"):
        known = ", ".join(p for p in PROVIDERS if p != "auto")
        raise ValueError(f"unknown provider {args.provider!r}; known: {known}")
    if args.pricing:
        table = _read_pricing(args.pricing)
    else:
        config = args.config or os.environ.get("LLMTALLY_CONFIG")
        if not config:
            raise ValueError(
                "no price table: give --pricing FILE (YAML with a pricing: section, or a LiteLLM "
                "JSON catalog), or --config FILE with a pricing: section"
            )
        table = _read_pricing(config, "--config" if args.config else "LLMTALLY_CONFIG")
    if args.usage == "-":
        text = sys.stdin.read()
    else:
        text = args.usage
    u = _usage(text)
    # the provider's own name first, as the sidecar prices (a dated snapshot may be priced apart)
    models = [args.model] if args.model else list(dict.fromkeys(m for m in (u.provider_model, u.model) if m))
    if not models:
        raise ValueError("no model: give --model (the usage names none)")
    found = _find(table, models, llm)
    if found is None:
        from .pricing import candidates

        tried = candidates(table.aliases.get(models[0], models[0]), llm)
        print(
            f"llmtally: error: model {models[0]} is not in the price table ({len(table)} "
            f"entr{'y' if len(table) == 1 else 'ies'}; "
            f"looked up as {', '.join(tried)}" + (f"; also {', '.join(models[1:])}" if models[1:] else "") + ")",
            file=sys.stderr,
        )
        return 1
    model, entry, price = found
    parts = breakdown(price, u)
    micro = rounded(microusd(price, u))  # the sum of the parts (pricing.microusd adds up the breakdown)
    out = {"model": model, "priced_as": entry}
    raw = {
        "cost_usd": _number(Decimal(micro) / 1_000_000),
        "cost_microusd": str(micro),
        "breakdown": "{" + ", ".join(f'"{k}": {_number(v)}' for k, v in parts.items()) + "}",
    }
    print(_dumps(out, raw))
    return 0


def _count(args: argparse.Namespace) -> int:
    f = _open(args.file)
    try:
        text = f.read().decode("utf-8", "replace")
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    print(count_tokens(text, model=args.model, encoding=args.encoding))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .config import ConfigError, load

    try:
        config = load(
            args.config,
            {
                "listen": args.listen,
                "metrics_addr": args.metrics_addr,
                "log_level": args.log_level,
                "log_format": args.log_format,
                "workers": args.workers,
                "observe": True if args.observe else None,
            },
        )
    except ConfigError as e:
        print(f"llmtally: error: invalid configuration: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # PyYAML, for --config
        print(f"llmtally: error: {e.name} is missing; pip install 'llmtally[serve]'", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    try:
        from .server import StartupError, run
    except ImportError as e:
        print(f"llmtally: error: {e.name} is missing; pip install 'llmtally[serve]'", file=sys.stderr)
        return 2
    try:
        return run(config)
    except StartupError as e:
        print(f"llmtally: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are in place
        return 130


def _envoy_config(args: argparse.Namespace) -> int:
    from .gateway import Jwt, LlmtallyTls, Route, bootstrap, host_port

    tls = None
    if args.llmtally_ca or args.llmtally_cert or args.llmtally_key or args.llmtally_server_name:
        if not args.llmtally_ca:
            raise ValueError("--llmtally-cert, --llmtally-key and --llmtally-server-name need --llmtally-ca")
        tls = LlmtallyTls(args.llmtally_ca, args.llmtally_server_name, args.llmtally_cert, args.llmtally_key)
    if args.rate_limit_service and args.no_rate_limit:
        raise ValueError("--rate-limit-service and --no-rate-limit exclude each other")
    if args.observe and args.rate_limit_service:
        raise ValueError("--observe and --rate-limit-service exclude each other: Envoy ignores llmtally's answers")
    if bool(args.upstream) == bool(args.route):
        raise ValueError("give --upstream HOST:PORT|URL or one --route PREFIX=PROVIDER=URL per provider (not both)")
    routes = [Route.parse(r) for r in args.route]
    jwt_flags = [
        f
        for f, given in (
            ("--jwt-issuer", args.jwt_issuer),
            ("--jwt-audience", args.jwt_audience),
            ("--jwks-cache-seconds", args.jwks_cache_seconds is not None),
            ("--jwt-header", args.jwt_header),
            ("--jwt-user-claim", args.jwt_user_claim),
            ("--jwt-team-claim", args.jwt_team_claim),
        )
        if given
    ]
    if args.jwks and args.jwks_uri:
        raise ValueError("--jwks and --jwks-uri exclude each other (a local or a remote JWKS)")
    given = (["--jwks"] if args.jwks else []) + (["--jwks-uri"] if args.jwks_uri else []) + jwt_flags
    if args.no_jwt and given:
        raise ValueError(f"--no-jwt excludes {', '.join(given)}")
    jwt = None
    if args.jwks or args.jwks_uri:
        if args.jwks_cache_seconds is not None and not args.jwks_uri:
            raise ValueError("--jwks-cache-seconds goes with --jwks-uri")
        jwks = ""
        if args.jwks:
            with open(args.jwks, encoding="utf-8") as f:
                jwks = f.read()
        jwt = Jwt(
            issuer=args.jwt_issuer or "",
            audiences=tuple(args.jwt_audience),
            jwks=jwks,
            jwks_uri=args.jwks_uri or "",
            cache_seconds=300 if args.jwks_cache_seconds is None else args.jwks_cache_seconds,
            header=args.jwt_header or "",
            user_claim=args.jwt_user_claim or "sub",
            team_claim=args.jwt_team_claim or "team",
        )
    elif jwt_flags:
        raise ValueError(f"{', '.join(jwt_flags)}: these go with the JWT's keys, --jwks FILE or --jwks-uri URL")
    if jwt is None and not args.no_rate_limit and (args.rate_limit_service or args.rate_limit_domain):
        raise ValueError(
            "the rate-limit filter limits per team, the JWT's team claim: it needs --jwks or --jwks-uri "
            "(without a JWT it is left out)"
        )
    if args.admin_address and args.admin_port is not None:
        raise ValueError("--admin-address and --admin-port exclude each other")
    admin_host, admin_port = (
        host_port(args.admin_address) if args.admin_address else ("127.0.0.1", args.admin_port or 9901)
    )
    cfg = bootstrap(
        listen_port=args.listen_port,
        admin_port=admin_port,
        admin_host=admin_host,
        upstream_addr=args.upstream,
        routes=routes,
        upstream_ca=args.upstream_ca or "",
        llmtally_addr=args.llmtally,
        access_log=args.access_log,
        jwt=jwt,
        rate_limit_domain=None if args.no_rate_limit else (args.rate_limit_domain or "llmtally"),
        listen_host=args.listen_host,
        llmtally_tls=tls,
        rate_limit_addr=args.rate_limit_service,
        observe=args.observe,
    )
    print(json.dumps(cfg, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(keep_running=args.keep_running)


def _version_line() -> str:
    from . import __version__, backend

    return f"llmtally {__version__} ({backend()} backend)"


def setup_logging(level: str, fmt: str = "text") -> None:
    """See logs.setup: llmtally's level, the libraries' warnings; text or JSON lines."""
    from .logs import setup

    setup(level, fmt)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="llmtally", description="Exact token accounting for LLM traffic.")
    p.add_argument("--version", action="version", version=_version_line())
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("scan", help="scan a response body and print its usage as JSON")
    s.add_argument(
        "--provider",
        default="auto",
        help=f"one of {', '.join(PROVIDERS)} (default: auto: from --path and --content-type, else from the bytes)",
    )
    s.add_argument("--request", metavar="FILE", help="the request body, for the model and streaming flag")
    s.add_argument("--path", default="", help="request path, e.g. /v1/chat/completions")
    s.add_argument("--content-type", default="", help="response content type")
    s.add_argument("--content-encoding", default="", help="response content encoding")
    s.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a response header (repeatable); some providers report usage in headers (Bedrock)",
    )
    s.add_argument("--backend", choices=BACKENDS, help="force a backend")
    s.add_argument(
        "--pricing",
        metavar="FILE",
        help="a price table (YAML with a pricing: section, or a LiteLLM .json catalog): adds cost_usd and "
        "cost_microusd when the model is priced",
    )
    s.add_argument("--model", help="with --pricing: price as this model (default: the one the usage names)")
    s.add_argument("response", metavar="RESPONSE_FILE|-", help="response body file, or - for stdin")
    s.set_defaults(func=_scan)
    k = sub.add_parser("cost", help="print what a call with a given usage cost, by a price table")
    k.add_argument(
        "--usage",
        required=True,
        metavar="JSON|-",
        help="the usage as llmtally scan prints it (prompt_tokens, completion_tokens, cached_tokens, "
        "cache_write_tokens, reasoning_tokens), or - for stdin",
    )
    k.add_argument("--model", help="the model to price (default: the usage's provider_model, then model)")
    k.add_argument("--provider", help="the provider id, for provider-qualified entries (openai/gpt-4o)")
    k.add_argument("--pricing", metavar="FILE", help="YAML with a pricing: section, or a LiteLLM-format .json catalog")
    k.add_argument(
        "--config",
        metavar="FILE",
        help="without --pricing: this configuration's pricing: section (also LLMTALLY_CONFIG)",
    )
    k.set_defaults(func=_cost)
    c = sub.add_parser("count", help="count the tokens of a text file as tiktoken does")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--model", help="model name; its tiktoken encoding (else the default encoding)")
    g.add_argument("--encoding", help="o200k_base or cl100k_base")
    c.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="UTF-8 text file, or - for stdin (default)")
    c.set_defaults(func=_count)
    v = sub.add_parser("serve", help="run the Envoy ext_proc sidecar")
    v.add_argument("--config", metavar="FILE", help="YAML configuration (also LLMTALLY_CONFIG)")
    v.add_argument("--listen", metavar="ADDR", help="gRPC address: host:port, unix:/path or unix-abstract:name")
    v.add_argument("--metrics-addr", metavar="HOST:PORT", help="Prometheus /metrics address")
    v.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    v.add_argument("--log-format", choices=("text", "json"), help="json: one object per line (also logFormat)")
    v.add_argument("--workers", metavar="N", help="processes sharing the listen port (default 1)")
    v.add_argument(
        "--observe",
        action="store_true",
        help="observe only: send Envoy no answers (its ext_proc in observability_mode: envoy-config --observe); "
        "also observe: true",
    )
    v.set_defaults(func=_serve)
    e = sub.add_parser(
        "envoy-config",
        help="print the Envoy bootstrap (JSON) that goes with llmtally",
        description="Print an Envoy bootstrap (JSON) with llmtally's ext_proc filter, routes to your LLM "
        "upstreams, optional JWT authentication and per-team token rate limits, and a JSON access log.",
    )
    u = e.add_argument_group("upstreams (one of --upstream and --route)")
    u.add_argument(
        "--upstream",
        metavar="HOST:PORT|URL",
        help="one upstream for the built-in routes (/openai, /anthropic, /mistral, /gemini/, /vertex/, /bedrock/): "
        "HOST:PORT is plain HTTP with the client's Host header, as before; a URL (http:// or https://) is "
        "reached as --route describes",
    )
    u.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="PREFIX=PROVIDER=URL",
        help="a route of your own (repeatable): requests under PREFIX go to URL with PREFIX replaced by the URL's "
        "path (/openai=openai=https://api.openai.com: /openai/v1/chat/completions -> /v1/chat/completions), "
        "the Host header set to the URL's host, TLS for https:// (SNI and certificate checked for the host); "
        f"llmtally reads them as PROVIDER, set here and never by the client (one of "
        f"{', '.join(p for p in PROVIDERS if p != 'auto')})",
    )
    u.add_argument(
        "--upstream-ca",
        metavar="FILE",
        help="CA bundle (PEM) that https:// upstreams and a --jwks-uri host must chain to, as Envoy sees it "
        "(default: this machine's system bundle, e.g. /etc/ssl/certs/ca-certificates.crt)",
    )
    j = e.add_argument_group(
        "JWT authentication (optional)",
        "Without --jwks or --jwks-uri there is no jwt_authn filter: every request passes, the access log's user "
        "and team are null, and the per-team rate-limit filter is left out. The token's claims go to Envoy's "
        "metadata under envoy.filters.http.jwt_authn:principal (llmtally's customLabels read them there, e.g. "
        "metadataKey: principal:team).",
    )
    j.add_argument("--jwks", metavar="FILE", help="a local JWKS (JSON) that signs your users' JWTs, put inline")
    j.add_argument("--jwks-uri", metavar="URL", help="a remote JWKS that Envoy fetches (a cluster for its host)")
    j.add_argument(
        "--jwks-cache-seconds", type=int, metavar="N", help="with --jwks-uri: how long Envoy keeps it (default 300)"
    )
    j.add_argument("--jwt-issuer", metavar="ISS", help="the iss tokens must carry (default: not checked)")
    j.add_argument(
        "--jwt-audience",
        action="append",
        default=[],
        metavar="AUD",
        help="an aud the token must name (repeatable: any of them; default: not checked)",
    )
    j.add_argument(
        "--jwt-header",
        metavar="NAME",
        help="the header the token comes in, bare (default: Authorization: Bearer); Envoy removes it before the "
        "upstream, so e.g. OpenAI's API key can stay in Authorization",
    )
    j.add_argument("--jwt-user-claim", metavar="CLAIM", help="the claim the access log's user is (default sub)")
    j.add_argument(
        "--jwt-team-claim",
        metavar="CLAIM",
        help="the claim the access log's team and the rate limits' descriptor are (default team)",
    )
    j.add_argument("--no-jwt", action="store_true", help="no JWT authentication (the default without a JWKS)")
    e.add_argument("--llmtally", default="127.0.0.1:18080", metavar="ADDR", help="llmtally serve's listen address")
    e.add_argument("--listen-host", default="0.0.0.0")
    e.add_argument("--listen-port", type=int, default=8080)
    e.add_argument(
        "--admin-address",
        metavar="HOST:PORT",
        help="Envoy's admin interface (default 127.0.0.1:9901; it can stop Envoy: open it wider, e.g. 0.0.0.0 for a "
        "kubelet's readiness probe on /ready, only where the network is closed to others)",
    )
    e.add_argument("--admin-port", type=int, metavar="PORT", help="the admin port on 127.0.0.1 (default 9901)")
    e.add_argument("--access-log", default="/dev/stdout", metavar="PATH")
    e.add_argument("--rate-limit-domain", metavar="DOMAIN", help="the rate-limit filter's domain (default llmtally)")
    e.add_argument("--no-rate-limit", action="store_true", help="leave the token rate limiting out")
    e.add_argument(
        "--observe",
        action="store_true",
        help="observe only: ext_proc in observability mode (Envoy does not wait for llmtally; pair with llmtally's "
        "observe: true); metrics and traces only, no access-log fields from llmtally, no rate limiting",
    )
    e.add_argument(
        "--rate-limit-service",
        metavar="ADDR",
        help="llmtally's rateLimit.listen address, when the rate-limit service has its own (default: --llmtally)",
    )
    t = e.add_argument_group("TLS to llmtally (its tlsCertFile/tlsKeyFile; paths as Envoy sees them)")
    t.add_argument("--llmtally-ca", metavar="FILE", help="CA (PEM) that llmtally's certificate must chain to")
    t.add_argument(
        "--llmtally-server-name",
        metavar="NAME",
        default="",
        help="name llmtally's certificate must carry, sent as SNI (default: the host of --llmtally; "
        "an IP address is matched against IP SANs)",
    )
    t.add_argument("--llmtally-cert", metavar="FILE", default="", help="Envoy's client certificate (mutual TLS)")
    t.add_argument("--llmtally-key", metavar="FILE", default="", help="its private key")
    e.set_defaults(func=_envoy_config)
    d = sub.add_parser("demo", help="run the seed walkthrough: Envoy + llmtally + a mock LLM, on loopback")
    d.add_argument("--keep-running", action="store_true", help="stay up afterwards and print curl commands")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env_encoding = os.environ.get("LLMTALLY_DEFAULT_ENCODING", "").strip()
    if env_encoding and env_encoding not in ENCODINGS:  # the library ignores it (with a warning); refuse it here
        print(
            f"llmtally: error: LLMTALLY_DEFAULT_ENCODING={env_encoding!r} is not one of {', '.join(ENCODINGS)}; "
            "set one of them or unset it",
            file=sys.stderr,
        )
        return 2
    try:
        rc: int = args.func(args)
        return rc
    except (OSError, ValueError, ImportError) as e:
        print(f"llmtally: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
