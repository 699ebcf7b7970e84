"""A lean HTTP/1.1 client for upstream calls: keep-alive pools, llhttp parsing, one timer each.

Why not aiohttp's `ClientSession` (which the gateway used first): per request it builds a
`ClientRequest`, a `ClientResponse`, a `StreamReader`, several timer handles and a tracing
context, about 100 µs of CPU on the benchmark machine; this client sends one pre-built head,
parses with llhttp (`httptools`, the parser uvicorn uses) and costs about 25 µs. For streams the
saving repeats per chunk: a chunk is handed over without a `StreamReader` and the stall and
deadline checks share one timer per response instead of one `asyncio.timeout` per chunk.

What it does: HTTP/1.1 over TCP or TLS (system trust store, SNI), `Content-Length`, chunked and
read-until-close bodies, gzip/deflate answers, keep-alive reuse (LIFO, idle connections closed
after `keepalive_s`), one silent retry on a fresh connection when a reused one turns out to be
closed before any answer byte (the server's keep-alive race), flow control for slow readers.
Errors come out as the gateway's `UpstreamError` tree, naming the provider, never a header.
"""
from gateway.httpclient.client import HttpClient
from gateway.httpclient.response import Headers, Response, stalled

__all__ = ["Headers", "HttpClient", "Response", "stalled"]
