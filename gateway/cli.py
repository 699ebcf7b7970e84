"""`modelyard` command line: serve, check-config, mock-provider, keys, usage."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_CONFIG = "config/gateway.yaml"


def _config_path(arg: str | None) -> str:
    return arg or os.environ.get("MODELYARD_CONFIG") or DEFAULT_CONFIG


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelyard", description="An OpenAI-compatible LLM gateway")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the gateway")
    s.add_argument("--config", help="routing table (default: $MODELYARD_CONFIG, else "
                   f"{DEFAULT_CONFIG})")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, default=None, help="processes sharing the port "
                   "(needs state.redis_url)")
    s.add_argument("--log-format", choices=("json", "text"), default=None)
    s.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    c = sub.add_parser("check-config", help="validate a config file and list every problem")
    c.add_argument("file")

    m = sub.add_parser("mock-provider", help="serve a fake upstream in a provider's wire format")
    m.add_argument("--flavor", choices=("openai", "anthropic", "gemini"), default="openai")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=9000)
    m.add_argument("--latency-ms", type=float, default=0.0)
    m.add_argument("--fail-rate", type=float, default=0.0)
    m.add_argument("--chunk-words", type=int, default=1)

    k = sub.add_parser("keys", help="manage dynamic keys through a running gateway's admin API")
    k.add_argument("action", choices=("create", "list", "revoke"))
    k.add_argument("--url", default=os.environ.get("MODELYARD_URL", "http://127.0.0.1:8080"))
    k.add_argument("--master-key", default=os.environ.get("MODELYARD_MASTER_KEY", ""))
    k.add_argument("--id")
    k.add_argument("--team", default="")
    k.add_argument("--models", help="comma-separated globs")
    k.add_argument("--rpm", type=int)
    k.add_argument("--tpm", type=int)
    k.add_argument("--expires-at")

    u = sub.add_parser("usage", help="usage report from a running gateway's admin API")
    u.add_argument("--url", default=os.environ.get("MODELYARD_URL", "http://127.0.0.1:8080"))
    u.add_argument("--master-key", default=os.environ.get("MODELYARD_MASTER_KEY", ""))
    u.add_argument("--from", dest="start")
    u.add_argument("--to", dest="end")
    u.add_argument("--group-by", default="team")
    u.add_argument("--key")
    u.add_argument("--team")
    u.add_argument("--model")
    u.add_argument("--provider")
    u.add_argument("--user")
    u.add_argument("--format", choices=("table", "csv", "json"), default="table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "serve":
        from gateway.serve import serve

        return serve(_config_path(args.config), host=args.host, port=args.port,
                     workers=args.workers, log_format=args.log_format, reuse_port=args.reuse_port)
    if args.command == "mock-provider":
        from gateway.mockserver.run import run_mock

        return run_mock(args.flavor, args.host, args.port, latency_ms=args.latency_ms,
                        fail_rate=args.fail_rate, chunk_words=args.chunk_words)
    from gateway.admin_client import keys_command, usage_command

    if args.command == "keys":
        return keys_command(args)
    return usage_command(args)


def check_config(path: str) -> int:
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(Path(path))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(cfg.providers)} providers, {len(cfg.routes)} routes)")
    return 0
