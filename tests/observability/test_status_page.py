"""The status page at `/` in a real headless Chromium (issue 7, item 5): providers with health,
routes, usage by team, refreshed by the page's script from /status.json; a screenshot."""
from __future__ import annotations

import asyncio
import html.parser
import shutil
from pathlib import Path
from typing import Any

import yaml

from gateway.app import create_app
from gateway.config import parse_config
from tests.fakes import FakeOpenAI, Reply, completion, error_body
from tests.observability.support import KEY_ALPHA, KEY_STRAY, SECRETS, auth, chat, config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run")


async def chromium(tmp: Path, *args: str) -> bytes:
    assert CHROMIUM, "chromium is not installed (apt-get install -y chromium)"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=3000",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    return out


class Tables(html.parser.HTMLParser):
    """Rows of each table by id, each row the text of its cells; and the #updated text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.updated = ""
        self._table = ""
        self._in_body = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_updated = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif a.get("id") == "updated":
            self._in_updated = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "div":
            self._in_updated = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_updated:
            self.updated += data


async def test_status_page_in_headless_chromium(aiohttp_server: Any, tmp_path: Path,
                                                fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    one, two = fakes
    cfg = config(one.base_url, two.base_url,
                 cooldown={"failures": 1, "window_s": 60, "cooldown_s": 300})
    app = create_app(parse_config(yaml.safe_dump(cfg), env={}))
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    from aiohttp import ClientSession

    async with ClientSession() as http:
        async def send(key: str, model: str) -> int:
            async with http.post(f"{base}/v1/chat/completions", json=chat(model),
                                 headers=auth(key)) as r:
                await r.read()
                return r.status

        one.push(Reply(200, completion("a", usage=(30, 12))),
                 Reply(200, completion("b", usage=(30, 12))))
        assert [await send(KEY_ALPHA, "chat/main") for _ in range(2)] == [200, 200]
        assert await send(KEY_STRAY, "chat/main") == 200
        two.push(Reply(500, error_body("down", "server_error")))  # up2 trips (failures: 1)
        assert await send(KEY_ALPHA, "chat/backup") == 502
        one.push(*[Reply(500, error_body("down", "server_error"))] * 2)  # up1/m-solo trips
        assert await send(KEY_ALPHA, "chat/solo") == 502
        for _ in range(100):  # the usage sink writes in the background
            async with http.get(f"{base}/status.json") as r:
                data = await r.json()
            if sum(u["requests"] for u in data["usage_by_team"]) == 5:
                break
            await asyncio.sleep(0.02)
        assert sum(u["requests"] for u in data["usage_by_team"]) == 5, data

    dom = (await chromium(tmp_path, "--dump-dom", f"{base}/")).decode()
    page = Tables()
    page.feed(dom)
    assert page.updated.startswith("live, updated "), page.updated  # the script ran
    providers = {row[0]: row for row in page.tables["providers"]}
    assert providers["up1"][1:] == ["openai", "up", "yes"]  # one of its targets is in rotation
    assert providers["up2"][1:] == ["openai", "down", "yes"]
    routes = {row[0]: row for row in page.tables["routes"]}
    assert routes["chat/main"][1:] == ["up1:m-main", "chat/backup"]
    assert routes["chat/backup"][1] == "up2:m-backup (cooling down)"
    assert routes["chat/solo"][1] == "up1:m-solo (cooling down)"
    assert routes["wild/*"][1] == "up2:*"
    usage = {row[0]: row for row in page.tables["usage"]}
    assert usage["alpha"][1:3] == ["4", "84"]  # 2 x 42 tokens; the 502s count, no tokens
    assert usage[cfg["auth"]["keys"][2]["team"]][1:3] == ["1", "29"]  # auto answer 19 + 10
    for secret in SECRETS:
        assert secret not in dom

    shot = tmp_path / "status.png"
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", f"{base}/")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1200, 900)
