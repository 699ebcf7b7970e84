"""deploy/Dockerfile: multi-stage, and a final stage that runs as non-root with a health
check and no compilers. (No Docker engine here: the file is checked, not built.)"""
from __future__ import annotations

import fnmatch
import re
import shlex

from tests.deploy.support import DEPLOY, REPO

DOCKERFILE = DEPLOY / "Dockerfile"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cc|libc6-dev|python3-dev)\b")


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_builder_stage_builds_wheels_and_final_stage_is_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert any(w == "RUN" and "pip wheel" in r for w, r in builder)
    arg = dict(r.split("=", 1) for w, r in _instructions() if w == "ARG" and "=" in r)
    base = final[0][1].split()[0]
    base = arg.get(base.strip("${}"), base)
    assert base.startswith("python:3.11-slim"), base
    assert any(w == "RUN" and "--no-index" in r and "from=builder" in r for w, r in final)


def test_final_stage_has_no_compilers() -> None:
    final = _stages()[-1]
    for word, rest in final:
        if word == "RUN":
            assert not COMPILERS.search(rest.replace("--no-install-recommends", "")), rest
    builder_text = " ".join(r for _, r in _stages()[0])
    assert COMPILERS.search(builder_text), "the checker must see compilers where they are"


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = [r for w, r in _stages()[-1] if w == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric UID lets Kubernetes verify runAsNonRoot"


def test_healthcheck_probes_healthz_with_python() -> None:
    (check,) = [r for w, r in _stages()[-1] if w == "HEALTHCHECK"]
    command = check.split("CMD", 1)[1].strip()
    assert command.startswith("[\"python\"")
    env = " ".join(r for w, r in _stages()[-1] if w == "ENV")
    assert "MODELYARD_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz" in env
    script = [r for w, r in _stages()[-1] if w == "COPY" and "healthcheck" in r]
    assert script and "/usr/local/bin/modelyard-healthcheck" in check


def test_exposes_8080_and_runs_modelyard_serve() -> None:
    final = _stages()[-1]
    assert ("EXPOSE", "8080") in final
    (entrypoint,) = [r for w, r in final if w == "ENTRYPOINT"]
    assert entrypoint == '["modelyard", "serve"]'


def test_copied_files_exist_and_pass_the_dockerignore() -> None:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                result = not negate
        return result

    for word, rest in _instructions():
        if word != "COPY" or "--from" in rest:
            continue
        *sources, _ = shlex.split(rest)
        for source in sources:
            assert (REPO / source).exists(), source
            assert not ignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    for secretish in (".venv", ".git", "tests", ".env", "deploy/kubernetes"):
        assert ignored(secretish), f"{secretish} would be sent to the Docker daemon"
