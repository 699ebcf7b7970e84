"""Server-sent events: an incremental reader safe at any byte split, and the writer's framing.

Pure code (no sockets): `SSEReader.feed(bytes)` returns the complete events seen so far and keeps
the rest, so an upstream stream cut at any byte boundary decodes the same.
"""
from __future__ import annotations

from gateway.types import ServerSentEvent


class SSEReader:
    __slots__ = ("_buf", "_data", "_event", "_id")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[ServerSentEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl
            if end > start and buf[end - 1] == 13:  # \r\n
                end -= 1
            line = buf[start:end]
            start = nl + 1
            self._line(line, events)
        # a lone \r line ending is legal SSE; we accept \n and \r\n (every provider uses those)
        self._buf = buf[start:]
        return events

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data or self._event:
                events.append(ServerSentEvent("\n".join(self._data), self._event, self._id))
            self._data = []
            self._event = None
            return
        if line[0] == 58:  # ":" comment / keep-alive
            return
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1:]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8"))
        elif name == b"event":
            self._event = value.decode("utf-8")
        elif name == b"id":
            self._id = value.decode("utf-8")

    def close(self) -> list[ServerSentEvent]:
        """End of input: an event without its trailing blank line still counts."""
        events: list[ServerSentEvent] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r"), events)
            self._buf = b""
        self._line(b"", events)
        return events


def encode_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"


def replay(raw: bytes, split: int) -> list[ServerSentEvent]:
    """Test helper: decode `raw` fed in pieces of `split` bytes."""
    reader = SSEReader()
    out: list[ServerSentEvent] = []
    for i in range(0, len(raw), split):
        out += reader.feed(raw[i:i + split])
    return out + reader.close()
