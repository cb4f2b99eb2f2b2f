"""An empty ext_proc server: answers every message with the empty response of
its kind and nothing else. With the same processing modes as llmtally it is
the floor for a grpcio host: python benches/noop_extproc.py --listen ADDR."""

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


async def main(listen: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Noop(), server)
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
    asyncio.run(main(ap.parse_args().listen))
