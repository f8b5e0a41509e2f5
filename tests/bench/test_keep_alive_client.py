"""The bench's keep-alive HTTP client counts what the server answers: a refusal is an error, not a fast call."""

from __future__ import annotations

import asyncio

from marketdata.bench.measure import webhook_latency


async def serve(status: bytes) -> tuple[asyncio.Server, list[bytes]]:
    """A server that answers every request with `status` on the same keep-alive connection; records bodies."""
    bodies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed the connection
                return
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            bodies.append(await reader.readexactly(length))
            answer = b'{"accepted":1}'
            writer.write(b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (status, len(answer), answer))
            await writer.drain()

    return await asyncio.start_server(handle, "127.0.0.1", 0), bodies


async def test_answers_are_read_and_refusals_counted() -> None:
    for status, errors in ((b"200 OK", 0), (b"401 Unauthorized", 6)):
        server, bodies = await serve(status)
        port = server.sockets[0].getsockname()[1]
        payloads = [b'{"items":[%d]}' % n for n in range(10)]
        result = await webhook_latency(f"http://127.0.0.1:{port}", payloads, rate=2000, batch_ticks=1)
        server.close()
        assert sorted(bodies) == sorted(payloads)  # every body arrived whole
        assert (result["count"], result["errors"], result["client"]) == (6, errors, "keep-alive")
        if errors:
            assert result["first_error"].startswith("401")
