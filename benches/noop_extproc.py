"""An empty ext_proc server: answers every message with the empty response of
its kind and nothing else. With the same processing modes as llmtally it is
the floor for a grpcio host: python benches/noop_extproc.py --listen ADDR.
--silent reads every message and answers none, and ends the stream at the
response's end, as llmtally does: the floor of Envoy's observability mode,
where answers are ignored (and Envoy would hold the stream open for its
deferred_close_timeout); its gRPC queue of calls not taken up yet is the one
llmtally has in observe mode (no refusal below 3,000)."""

import argparse
import asyncio
import signal

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from llmtally.exchange import PASS


class Noop(pb_grpc.ExternalProcessorServicer):
    async def Process(self, request_iterator, context):
        async for req in request_iterator:
            yield PASS[req.WhichOneof("request")]


class Silent(pb_grpc.ExternalProcessorServicer):
    async def Process(self, request_iterator, context):
        async for req in request_iterator:
            kind = req.WhichOneof("request")
            if kind == "response_trailers" or (kind in END_KINDS and getattr(req, kind).end_of_stream):
                break
        return
        yield  # an async generator that yields nothing


#: the messages whose end_of_stream ends the response
END_KINDS = ("response_headers", "response_body")


async def main(listen: str, silent: bool) -> None:
    # as llmtally's observe mode (server._grpc_server): gRPC's hard bound, without its random refusals below it
    queue = [("grpc.server.max_pending_requests", 3000), ("grpc.server.max_pending_requests_hard_limit", 3000)]
    server = grpc.aio.server(options=queue if silent else None)
    pb_grpc.add_ExternalProcessorServicer_to_server(Silent() if silent else Noop(), server)
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--silent", action="store_true", help="answer nothing (for Envoy's observability_mode)")
    args = ap.parse_args()
    asyncio.run(main(args.listen, args.silent))
