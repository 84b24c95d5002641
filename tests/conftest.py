"""Shared fixtures. The starter model is built once per code version and cached;
each test gets its own storage dir and SQLite file."""

from __future__ import annotations

import contextlib
import fcntl
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


@contextlib.contextmanager
def cache_lock():
    """One builder at a time for the shared cache (several pytest runs may share it)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _starter_key() -> str:
    h = hashlib.sha256()
    for p in (ROOT / "app" / "models" / "starter_model.py", ROOT / "data" / "starter_corpus.txt"):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def starter_dir() -> Path:
    """The tiny starter model, rebuilt only when its builder or corpus changes."""
    from app.models.starter_model import build_starter_model

    target = CACHE / f"starter-{_starter_key()}"
    with cache_lock():
        if not (target / "model.safetensors").is_file():
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            build_starter_model(tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    return target


def make_workbench(home: Path):
    from app.bootstrap import open_workbench
    from app.core.settings import Settings

    return open_workbench(Settings(home=home, job_env={"HF_HUB_OFFLINE": "1"}))


@pytest.fixture
def wb(tmp_path):
    bench = make_workbench(tmp_path / "home")
    yield bench
    bench.close()


@pytest.fixture
def starter(wb, starter_dir):
    """The cached starter model registered as a base in a fresh workbench."""
    from app.models import registry

    return registry.register_base_model(wb, "starter", str(starter_dir))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """Run a FastAPI app with uvicorn in a thread, on a free localhost port.

    For what needs real sockets (gradio_client, concurrent clients, subprocesses);
    other tests call the app in-process through fastapi.testclient.TestClient."""

    STOP_S = 5  # it stops in ~0.1 s (launch.uvicorn_server); more means something holds it

    def __init__(self, app) -> None:
        import launch

        self.port = free_port()
        self.server = launch.uvicorn_server(app, "127.0.0.1", self.port)
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

    def __exit__(self, exc_type, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.STOP_S)
        if self.thread.is_alive() and exc_type is None:
            raise RuntimeError(f"server still running {self.STOP_S} s after it was told to stop")


@pytest.fixture(scope="session")
def sft_adapter_dir(starter_dir, tmp_path_factory) -> Path:
    """A LoRA adapter SFT-trained on the starter model (real llamafactory-cli run), cached."""
    h = hashlib.sha256(_starter_key().encode() + (ROOT / "recipes/sft_lora.yaml").read_bytes()
                       + repr(sorted(FAST.items())).encode())
    target = CACHE / f"sft-adapter-{h.hexdigest()[:16]}"
    with cache_lock():
        if not (target / "adapter_config.json").is_file():
            _train_sft_adapter(starter_dir, target, tmp_path_factory.mktemp("sft-adapter"))
    return target


def _train_sft_adapter(starter_dir: Path, target: Path, home: Path) -> None:
    from app.data import datasets
    from app.models import registry
    from app.train import training

    wb = make_workbench(home)
    try:
        base = registry.register_base_model(wb, "starter", str(starter_dir))
        ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft", "sft")
        run = training.start_run(wb, training.TrainRequest("sft_lora", base.id, [ds.id], overrides=FAST))
        run = training.wait_run(wb, run.id, 600)
        assert run.status == "succeeded", run.error
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run.output_dir, target, ignore=shutil.ignore_patterns("checkpoint-*"))
    finally:
        wb.close()


@pytest.fixture
def duel(wb, starter, sft_adapter_dir):
    """Two local contestants: the starter base and its SFT fine-tune."""
    from app.models import registry

    tuned = registry.register_adapter(wb, "tuned", starter.id, str(sft_adapter_dir))
    return starter, tuned


def neutral_brain(model: str, prompt: str) -> str:
    """Stub replies that do not name the model (so votes are not flagged as identity leaks)."""
    words = prompt.split()
    return " ".join(["answer", str(len(model)), *words[::-1]])


@pytest.fixture
def stub():
    from tests.ollama_stub import OllamaStub

    with OllamaStub(models=["alpha:1b", "beta:1b", "gamma:1b"], brain=neutral_brain) as s:
        yield s


def register_served(wb, stub, names=("alpha:1b", "beta:1b", "gamma:1b")) -> list:
    """Register stub-served models as arena contestants named alpha, beta, ..."""
    from app.models import registry

    return [registry.register_remote_model(wb, n.split(":")[0], "ollama", stub.url, n) for n in names]


def home_with_served(home: Path, stub, names=("alpha:1b", "beta:1b")) -> list:
    """A storage home whose registry holds stub-served models (for server fixtures)."""
    wb = make_workbench(home)
    try:
        return register_served(wb, stub, names)
    finally:
        wb.close()


@pytest.fixture
def served(wb, stub):
    """Three arena models served by the Ollama stub."""
    return register_served(wb, stub)


@pytest.fixture
def starter_server(tmp_path, starter_dir):
    """The workbench server (not started) over a home whose registry holds the starter:
    yields (server app, its workbench, the starter's ModelVersion)."""
    import launch
    from app.core.settings import Settings
    from app.models import registry

    home = tmp_path / "home"
    setup = make_workbench(home)
    base = registry.register_base_model(setup, "starter", str(starter_dir))
    setup.close()
    server, _, wb = launch.build_server(Settings(home=home))
    yield server, wb, base
    wb.close()
