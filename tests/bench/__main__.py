"""`python -m tests.bench [--smoke] [--soak [SECONDS]] [--rounds N] [--duration S]`.

Prints the Markdown table on stdout (progress on stderr). A full run also writes
tests/bench/results.md and .bench/results.json. Exit status 1 only when the harness itself broke
(a target did not start, errors on our own targets, a stream that was not one), never for a
missed target.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path

from tests.bench import render, report, runner
from tests.bench.procs import HarnessError
from tests.bench.targets import REPO

log = logging.getLogger("tests.bench")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one round of 1 s runs, no LiteLLM")
    p.add_argument("--soak", nargs="?", type=float, const=300.0, default=0.0, metavar="SECONDS",
                   help="RSS soak of modelyard-redis at c=16 (default 300 s)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="seconds per measured run")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per target and scenario")
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--no-workers", action="store_true", help="skip the --workers 2 target")
    p.add_argument("--chunk-gap-ms", type=float, help="the mock's gap between stream events")
    p.add_argument("--out", type=Path, help="also write the Markdown here (a full run writes "
                   "tests/bench/results.md)")
    p.add_argument("--keep-tmp", action="store_true", help="keep logs, configs and usage files")
    return p.parse_args(argv)


def options(a: argparse.Namespace) -> runner.Options:
    base = runner.smoke_options() if a.smoke else runner.Options()
    over = {k: v for k, v in (("rounds", a.rounds), ("duration_s", a.duration),
                              ("warmup_s", a.warmup), ("chunk_gap_ms", a.chunk_gap_ms))
            if v is not None}
    if a.no_litellm:
        over["litellm"] = False
    if a.no_workers:
        over["workers"] = False
    return dataclasses.replace(base, soak_s=a.soak, keep_tmp=a.keep_tmp, **over)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the runner's finally blocks


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="bench %(asctime)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _terminate)
    opts = options(a)
    try:
        res = runner.run(opts)
    except HarnessError as exc:
        log.error("the benchmark harness failed: %s", exc)
        return 1
    text = render.markdown(res)
    sys.stdout.write(text)
    outs = ([] if opts.smoke else [REPO / "tests" / "bench" / "results.md"]) + \
        ([a.out] if a.out else [])
    for out in outs:
        out.write_text(text)
        log.info("wrote %s", out)
    if not opts.smoke:
        dump = REPO / ".bench" / "results.json"
        dump.parent.mkdir(exist_ok=True)
        dump.write_text(json.dumps(dataclasses.asdict(res), indent=1, default=str))
    problems = report.harness_problems(res)
    for p in problems:
        log.error("harness problem: %s", p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
