"""An empty ext_proc server: answers every message with the empty response of
its kind and nothing else. With the same processing modes as llmtally it is
the floor for a grpcio host: python benches/noop_extproc.py --listen ADDR.
--silent reads every message and answers none: the floor of Envoy's
observability mode, where answers are ignored."""

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
        async for _ in request_iterator:
            pass
        return
        yield  # an async generator that yields nothing


async def main(listen: str, silent: bool) -> None:
    server = grpc.aio.server()
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
