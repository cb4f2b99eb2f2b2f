"""The ``llmtally`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import BinaryIO, NoReturn

from . import (
    BACKENDS,
    ENCODINGS,
    PROVIDERS,
    RequestInfo,
    ResponseScanner,
    count_tokens,
    parse_request,
    sniff_provider,
)

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
    print(json.dumps(u.as_dict()))
    if u.source == "none":
        print(
            f"llmtally: warning: no usage and no text found in {args.response} read as {sc.provider}{how}, "
            f"framing {sc.framing or 'undecided'}; give --provider, --path or --content-type if that is wrong",
            file=sys.stderr,
        )
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
    import logging

    from .config import ConfigError, load

    try:
        config = load(
            args.config,
            {
                "listen": args.listen,
                "metrics_addr": args.metrics_addr,
                "log_level": args.log_level,
                "workers": args.workers,
            },
        )
    except ConfigError as e:
        print(f"llmtally: error: invalid configuration: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # PyYAML, for --config
        print(f"llmtally: error: {e.name} is missing; pip install 'llmtally[serve]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    from .gateway import LlmtallyTls, bootstrap

    tls = None
    if args.llmtally_ca or args.llmtally_cert or args.llmtally_key or args.llmtally_server_name:
        if not args.llmtally_ca:
            raise ValueError("--llmtally-cert, --llmtally-key and --llmtally-server-name need --llmtally-ca")
        tls = LlmtallyTls(args.llmtally_ca, args.llmtally_server_name, args.llmtally_cert, args.llmtally_key)
    if args.rate_limit_service and args.no_rate_limit:
        raise ValueError("--rate-limit-service and --no-rate-limit exclude each other")
    with open(args.jwks, encoding="utf-8") as f:
        jwks = f.read()
    cfg = bootstrap(
        listen_port=args.listen_port,
        admin_port=args.admin_port,
        upstream_addr=args.upstream,
        llmtally_addr=args.llmtally,
        access_log=args.access_log,
        jwks=jwks,
        rate_limit_domain=None if args.no_rate_limit else args.rate_limit_domain,
        listen_host=args.listen_host,
        llmtally_tls=tls,
        rate_limit_addr=args.rate_limit_service,
    )
    print(json.dumps(cfg, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(keep_running=args.keep_running)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="llmtally", description="Exact token accounting for LLM traffic.")
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
    s.add_argument("response", metavar="RESPONSE_FILE|-", help="response body file, or - for stdin")
    s.set_defaults(func=_scan)
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
    v.add_argument("--workers", metavar="N", help="processes sharing the listen port (default 1)")
    v.set_defaults(func=_serve)
    e = sub.add_parser("envoy-config", help="print the Envoy bootstrap (JSON) that goes with llmtally")
    e.add_argument("--jwks", required=True, metavar="FILE", help="JWKS (JSON) that signs your users' JWTs")
    e.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the LLM upstream (plain HTTP)")
    e.add_argument("--llmtally", default="127.0.0.1:18080", metavar="ADDR", help="llmtally serve's listen address")
    e.add_argument("--listen-host", default="0.0.0.0")
    e.add_argument("--listen-port", type=int, default=8080)
    e.add_argument("--admin-port", type=int, default=9901)
    e.add_argument("--access-log", default="/dev/stdout", metavar="PATH")
    e.add_argument("--rate-limit-domain", default="llmtally")
    e.add_argument("--no-rate-limit", action="store_true", help="leave the token rate limiting out")
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
