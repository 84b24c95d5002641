"""Shared fixtures. The starter model is built once per code version and cached;
each test gets its own storage dir and SQLite file."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".pytest_cache" / "forgeloop"

# Small training settings so a CPU run takes a few seconds.
FAST = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3, "warmup_ratio": 0.0, "save_steps": 1000}


def _starter_key() -> str:
    h = hashlib.sha256()
    for p in (ROOT / "app" / "starter_model.py", ROOT / "data" / "starter_corpus.txt"):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def starter_dir() -> Path:
    """The tiny starter model, rebuilt only when its builder or corpus changes."""
    from app.starter_model import build_starter_model

    target = CACHE / f"starter-{_starter_key()}"
    if not (target / "model.safetensors").is_file():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_starter_model(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def make_workbench(home: Path):
    from app.settings import Settings
    from app.workbench import Workbench

    return Workbench(Settings(home=home, job_env={"HF_HUB_OFFLINE": "1"}))


@pytest.fixture
def wb(tmp_path):
    bench = make_workbench(tmp_path / "home")
    yield bench
    bench.close()


@pytest.fixture
def starter(wb, starter_dir):
    """The cached starter model registered as a base in a fresh workbench."""
    from app import registry

    return registry.register_base_model(wb, "starter", str(starter_dir))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """Run a FastAPI app with uvicorn in a thread, on a free localhost port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
