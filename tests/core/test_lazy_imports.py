"""A gateway without Redis or tracing never loads redis-py or the OpenTelemetry SDK: together
they cost ~11 MiB of RSS and start-up time (redis-py 8 loads the SDK when it is installed)."""
from __future__ import annotations

import subprocess
import sys

CHECK = """
import asyncio, sys
from gateway.app import create_app
from gateway.config import parse_config
import gateway.cli, gateway.serve

cfg = parse_config('''
auth:
  keys: [{id: t, key: sk-lazy-imports-test-1}]
providers:
  local: {adapter: mock}
routes:
  "mock/*": {targets: [{provider: local}]}
usage: {jsonl_path: "%s"}
''', env={})

async def main():
    from aiohttp.test_utils import TestClient, TestServer
    async with TestClient(TestServer(create_app(cfg))) as client:
        r = await client.post("/v1/chat/completions", json={"model": "mock/echo", "messages": [
            {"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer sk-lazy-imports-test-1"})
        body = await r.json()
        assert r.status == 200, body
        assert body["choices"][0]["message"]["content"], body
    # the usage record went all the way through the sink to the JSON-lines file
    assert open("%s").read().count('"request_id"') == 1

asyncio.run(main())
print(sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("redis", "opentelemetry")}))
"""


def test_no_redis_or_opentelemetry_without_them(tmp_path: object) -> None:
    out = subprocess.run([sys.executable, "-c", CHECK % ((f"{tmp_path}/usage.jsonl",) * 2)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
