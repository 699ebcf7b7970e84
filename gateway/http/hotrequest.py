"""Which requests the lean server (`fastserver.py`) answers itself, and the request it reads.

A head is taken only when it is a plain request to a hot endpoint: `POST /v1/chat/completions`,
`/chat/completions` or `/v1/embeddings` over HTTP/1.1, a body framed by Content-Length, no
Transfer-Encoding, Content-Encoding, Expect or Upgrade, valid field names and values (one regular
expression decides), within aiohttp's own line and field limits. `parse_head` returns None for
anything else, and the server hands the connection to aiohttp, whose strict parser answers it.
"""
from __future__ import annotations

import asyncio
import re

from aiohttp.helpers import parse_content_type
from multidict import CIMultiDict

MAX_HEAD = 64 * 1024  # a longer head goes to aiohttp, which refuses it with its own limits
MAX_LINE = 8190  # aiohttp's own limits: a longer line or more fields go to it, which refuses them
MAX_FIELDS = 128

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEAD = re.compile(  # the whole head but its final CRLF CRLF: request line, then field lines
    rb"POST (/v1/chat/completions|/chat/completions|/v1/embeddings)(?:\?[!-~]*)? HTTP/1\.1"
    rb"(?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*")
_KINDS = {b"/v1/chat/completions": "chat", b"/chat/completions": "chat",
          b"/v1/embeddings": "embeddings"}
_HANDED_OVER = frozenset((b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"))


class HotRequest:
    __slots__ = ("body", "headers", "kind", "left", "length", "too_large", "waiter")

    def __init__(self, kind: str, headers: CIMultiDict[str], length: int) -> None:
        self.kind = kind
        self.headers = headers
        self.length = length
        self.body: bytes | bytearray = b""
        self.left = 0  # body bytes still to come
        self.too_large = False  # over server.max_body_mb: the body is skipped, never kept
        self.waiter: asyncio.Future[None] | None = None

    def add(self, data: bytes) -> None:
        self.left -= len(data)
        if not self.too_large:
            self.body += data  # a bytearray while parts are missing
        if not self.left and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def parse_head(head: bytes) -> tuple[HotRequest, bool] | None:
    """(the request, keep-alive) when the head is a plain hot-path request, else None."""
    m = _HEAD.fullmatch(head)
    if m is None:
        return None
    lines = head.split(b"\r\n")
    if len(lines) > MAX_FIELDS + 1:
        return None
    pairs = []
    length = -1
    keep = True
    for line in lines:
        if len(line) > MAX_LINE:
            return None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        lname = name.lower()
        if lname == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 18:
                return None  # repeated, not a number or absurd: aiohttp's parser judges it
            length = int(value)
        elif lname in _HANDED_OVER:
            return None
        elif lname == b"connection" and b"close" in value.lower():
            keep = False
        pairs.append((name.decode("ascii"), value.decode("utf-8", "surrogateescape")))
    return HotRequest(_KINDS[m.group(1)], CIMultiDict(pairs), max(length, 0)), keep


def media_type(value: str | None) -> str:
    """`application/json; charset=utf-8` → `application/json`: aiohttp's `content_type`, by
    its own parser (odd bytes become U+FFFD, no slash means application/octet-stream)."""
    if not value:
        return "application/octet-stream"
    return parse_content_type(value)[0]
