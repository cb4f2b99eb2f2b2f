"""Test-only entry point: the real `llmtally` command line with one fault
planted, so the suite can exercise the failure path of a stream. A request
for model `explode` raises inside the stream handler, where the request body
is parsed (stage `request_body`); every other request is served as usual.

    python tests/faulty_serve.py serve --config FILE

The patch is applied at import, so the worker processes of `workers: N`
(started with multiprocessing's spawn, which re-imports this main module)
carry it too. Production code has no fault-injection hook.
"""

import sys

from llmtally import cli
from llmtally.exchange import Exchange

FAULT_MODEL = "explode"

_parse = Exchange._parse


def _parse_or_explode(self) -> None:
    _parse(self)
    if self.request.model == FAULT_MODEL:
        self.request = None
        raise RuntimeError(f"fault injected for testing (model {FAULT_MODEL!r})")


Exchange._parse = _parse_or_explode

if __name__ == "__main__":
    sys.exit(cli.main())
