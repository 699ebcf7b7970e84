"""The stream relay: the events of one upstream read leave in one client write; errors keep
the frames decoded before them."""
from __future__ import annotations

from typing import Any

from gateway.accounting.record import UsageRecord
from gateway.dispatch import StreamStart
from gateway.errors import UpstreamProtocolError
from gateway.sse import DONE, SSEReader
from gateway.streaming import ChunkEncoder, relay
from gateway.types import ServerSentEvent, StreamEvent, loads
from gateway.upstream import _LocalResponse


class _Decoder:
    def feed(self, ev: ServerSentEvent) -> list[StreamEvent]:
        if ev.data == "boom":
            raise UpstreamProtocolError("provider 'p' sent an error mid-stream: boom",
                                        provider="p")
        return [StreamEvent({"choices": [{"index": 0, "delta": {"content": ev.data}}]})]

    def close(self) -> list[StreamEvent]:
        return []


async def _run(reads: list[bytes]) -> list[bytes]:
    resp = _LocalResponse(200, reads, 0, True, "p")
    chunks = resp.chunks().__aiter__()
    first = [StreamEvent({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    start = StreamStart(resp, SSEReader(), _Decoder(), first, chunks)
    enc = ChunkEncoder("m", "rid", False)
    rec = UsageRecord(request_id="rid", ts=0.0)
    return [frame async for frame in relay(start, enc, rec, 5.0)]


def _contents(frame: bytes) -> list[Any]:
    return [loads(part[6:])["choices"][0]["delta"].get("content")
            for part in frame.split(b"\n\n") if part.startswith(b"data: {\"choices")]


async def test_events_of_one_read_leave_in_one_write() -> None:
    out = await _run([b"data: a\n\ndata: b\n\ndata: c\n\n", b"data: d\n\n"])
    assert len(out) == 4  # role chunk, a+b+c together, d, [DONE]
    assert _contents(out[1]) == ["a", "b", "c"] and _contents(out[2]) == ["d"]
    assert out[3] == DONE


async def test_an_error_mid_read_keeps_the_frames_before_it() -> None:
    out = await _run([b"data: a\n\ndata: boom\n\n"])
    assert len(out) == 2
    assert _contents(out[1]) == ["a"]
    assert b'"code":"upstream_protocol_error"' in out[1] and DONE not in out
