"""Test-only entry point: the real `llmtally` command line with faults
planted, so the suite can exercise the failure path of a stream. A request
for model `explode` raises inside the stream handler, where the request body
is parsed (stage `request_body`); one for `explode-late` raises on the last
response body chunk (stage `response_body`), after the rest was scanned;
one for `slow` blocks 3 s on its first response body chunk (past the 2 s
message timeout of the generated Envoy bootstrap); every other request is
served as usual.

    python tests/faulty_serve.py serve --config FILE

The patch is applied at import, so the worker processes of `workers: N`
(started with multiprocessing's spawn, which re-imports this main module)
carry it too. Production code has no fault-injection hook.
"""

import sys
import time

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

LATE_FAULT_MODEL = "explode-late"
_response_body = Exchange.response_body


SLOW_MODEL = "slow"


def _response_body_or_explode(self, req):
    model = self.request.model if self.request is not None else None
    if req.response_body.end_of_stream and model == LATE_FAULT_MODEL:
        raise RuntimeError(f"fault injected for testing (model {LATE_FAULT_MODEL!r})")
    if model == SLOW_MODEL and self.t_first is None and req.response_body.body:
        time.sleep(3)  # blocks the loop, as a CPU-heavy message would
    return _response_body(self, req)


Exchange.response_body = _response_body_or_explode

if __name__ == "__main__":
    sys.exit(cli.main())
