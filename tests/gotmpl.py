"""Render Ollama chat TEMPLATEs with Go's real ``text/template`` (``tests/gotmpl/main.go``).

The binary is built once per source version into ``.pytest_cache`` (keyed by a hash of
the Go sources and the Go version). Without ``go`` the calling test skips and says why,
except under ``CI=true`` where it fails: there the check must run (``make golang``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent / "gotmpl"
CACHE = SRC.parents[1] / ".pytest_cache" / "forgeloop"


def _go() -> str:
    go = shutil.which("go")
    if go:
        return go
    if os.environ.get("CI") == "true":
        pytest.fail("go is not installed, and CI=true requires the Go template checks to run")
    pytest.skip("go is not installed (run `make golang` as root to install Debian's golang-go)")


@functools.cache
def binary() -> Path:
    """The built renderer; skips (or fails under CI) when Go is missing."""
    go = _go()
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    h = hashlib.sha256(version.encode())
    for p in sorted(SRC.iterdir()):
        if p.suffix in (".go", ".mod"):
            h.update(p.name.encode() + p.read_bytes())
    target = CACHE / f"gotmpl-{h.hexdigest()[:16]}"
    if not target.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        # Standard library only: no module downloads, ever.
        env = {"GOCACHE": str(CACHE / "go-build"), **os.environ,
               "GOFLAGS": "-mod=mod", "GOPROXY": "off", "CGO_ENABLED": "0"}
        done = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=SRC, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"go build failed:\n{done.stderr}")
        tmp.replace(target)
    return target


def _run(payload: object) -> str:
    done = subprocess.run([str(binary())], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return done.stdout


def _case(template: str, messages: list[dict[str, str]], system: str | None) -> dict:
    return {"template": template, "system": system or "", "messages": messages}


def render(template: str, messages: list[dict[str, str]], system: str | None = None) -> str:
    """The prompt Ollama builds for a /api/chat request with ``messages`` on a model whose
    Modelfile has this TEMPLATE and SYSTEM ``system``."""
    return _run(_case(template, messages, system))


def render_many(cases: list[tuple[str, list[dict[str, str]], str | None]]) -> list[str]:
    """``render`` for many (template, messages, system) cases in one process."""
    if not cases:
        return []
    return json.loads(_run([_case(*c) for c in cases]))
