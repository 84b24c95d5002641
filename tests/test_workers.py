"""The model-worker pool with real worker processes on the starter model: start and
answer, evict, crash and restart, idle stop, app restart, wrong model, REST."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import replace

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from app.core.errors import EngineError
from app.core.tables import ModelWorker
from app.inference import workers
from app.inference.chat_engines import model_engines
from app.inference.generation import Finish, GenSettings
from app.inference.workers import WorkerPool, served_name, worker_pool

HELLO = [{"role": "user", "content": "Hello!"}]
GREEDY = GenSettings(temperature=0.0, max_new_tokens=12)


def answer(wb, mv, gen=GREEDY) -> tuple[str, str]:
    pieces = list(model_engines(wb).engine(mv).stream(HELLO, gen))
    assert isinstance(pieces[-1], Finish)
    return "".join(p for p in pieces if isinstance(p, str)), pieces[-1].reason


def row_of(wb, model_id) -> ModelWorker | None:
    with wb.session() as s:
        return s.exec(select(ModelWorker).where(ModelWorker.model_id == model_id)).first()


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_worker_serves_its_model_and_the_least_recent_is_evicted(wb, duel):
    base, tuned = duel
    wb.settings = replace(wb.settings, max_workers=1)
    text, reason = answer(wb, base)
    assert text.strip() and reason in ("stop", "length")
    first = row_of(wb, base.id)
    assert first.state == "ready" and first.owner_pid == os.getpid() and first.gpu is None
    assert first.threads == (os.cpu_count() or 1)  # alone (max_workers=1): every core
    # It answers to the registered version's name only.
    models = httpx.get(f"http://127.0.0.1:{first.port}/v1/models").json()["data"]
    assert [m["id"] for m in models] == [served_name(base)]
    bad = httpx.post(f"http://127.0.0.1:{first.port}/v1/chat/completions",
                     json={"model": "someone-else", "messages": HELLO})
    assert bad.status_code == 404
    # A greedy answer is the same again; the budget ends it with "length".
    assert answer(wb, base) == (text, reason)
    _, cut = answer(wb, base, GenSettings(temperature=0.0, max_new_tokens=1))
    assert cut == "length"
    status = workers.worker_status(wb, base.id)
    assert status["requests"] == 3 and status["tokens_per_s"] > 0 and status["rss_bytes"] > 0

    # A second model with room for one: the first process exits (memory really freed).
    answer(wb, tuned)
    assert gone(first.pid) and row_of(wb, base.id) is None
    assert [w["model_id"] for w in workers.worker_status(wb)] == [tuned.id]

    # Unload stops it; the app's shutdown stops what is left.
    assert worker_pool(wb).unload(tuned.id) and not worker_pool(wb).unload(tuned.id)
    answer(wb, base)
    last = row_of(wb, base.id)
    wb.close()
    assert gone(last.pid)


def test_seeded_sampling_replays_through_the_worker(wb, starter):
    seeded = GenSettings(temperature=1.0, top_p=1.0, max_new_tokens=16, seed=7)
    one, two = answer(wb, starter, seeded), answer(wb, starter, seeded)
    other = {answer(wb, starter, seeded.with_seed(s))[0] for s in (8, 9, 10)}
    assert one == two and len(other | {one[0]}) > 1


def test_a_crashed_worker_is_explained_and_restarted(wb, starter):
    answer(wb, starter)
    dead = row_of(wb, starter.id)
    engine = model_engines(wb).engine(starter)
    os.kill(dead.pid, signal.SIGKILL)
    assert gone(dead.pid)
    with pytest.raises(EngineError, match="stopped unexpectedly.*restarted"):
        list(engine.stream(HELLO, GREEDY))
    # The next message is answered by a fresh worker.
    text, _ = answer(wb, starter)
    fresh = row_of(wb, starter.id)
    assert text.strip() and fresh.pid != dead.pid

    # The health pass (here, or the app's monitor thread first) restarts a worker that died
    # between messages.
    os.kill(fresh.pid, signal.SIGKILL)
    assert gone(fresh.pid)
    worker_pool(wb).check()
    deadline = time.monotonic() + 60
    while not ((again := row_of(wb, starter.id)) and again.state == "ready" and again.restarts):
        assert time.monotonic() < deadline, "not restarted"
        time.sleep(0.2)
    assert again.pid not in (dead.pid, fresh.pid) and again.restarts == 1 and again.last_error


def test_an_idle_worker_stops_by_itself_and_is_not_restarted(wb, starter):
    wb.settings = replace(wb.settings, worker_idle_minutes=0.05)  # 3 s
    answer(wb, starter)
    row = row_of(wb, starter.id)
    assert gone(row.pid, within=30)
    assert worker_pool(wb).check() == [] and row_of(wb, starter.id) is None
    assert answer(wb, starter)[0].strip()  # started again on demand


def test_an_app_restart_adopts_healthy_workers_and_clears_the_rest(wb, duel):
    base, tuned = duel
    answer(wb, base)
    answer(wb, tuned)
    kept, broken = row_of(wb, base.id), row_of(wb, tuned.id)
    # The tuned one's row now names another model: what answers on its port is not it.
    with wb.session() as s:
        r = s.get(ModelWorker, broken.id)
        r.served_name = "forgeloop-999-000000000000"
        s.add(r)
        s.commit()
    # A new app process over the same storage (the old one died without stopping them); the
    # app's pool adopts when it is made (owner=True), called here to see what it did.
    later = WorkerPool(wb.settings, wb.engine)
    try:
        assert later.adopt() == {"adopted": [base.id], "cleared": [tuned.id]}
        assert gone(broken.pid) and not gone(kept.pid, within=0.5)
        assert later.ensure(base).pid == kept.pid  # reused, not reloaded
    finally:
        later.close()
    assert gone(kept.pid)


def test_a_worker_never_answers_for_a_changed_version(wb, starter, sft_adapter_dir):
    answer(wb, starter)
    old = row_of(wb, starter.id)
    from app.core.tables import ModelVersion

    with wb.session() as s:  # the version's weights change under the same id
        mv = s.get(ModelVersion, starter.id)
        mv.adapter_path, mv.kind = str(sft_adapter_dir), "adapter"
        s.add(mv)
        s.commit()
        s.refresh(mv)
    answer(wb, mv)
    new = row_of(wb, starter.id)
    assert gone(old.pid) and new.served_name == served_name(mv) != old.served_name


def test_worker_routes(starter_server):
    server, wb, base = starter_server
    with TestClient(server) as client:
        assert client.get("/api/workers").json() == []
        loaded = client.post(f"/api/workers/{base.id}/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["state"] == "ready" and loaded.json()["device"] == "cpu"
        assert client.get(f"/api/workers/{base.id}").json()["pid"] == loaded.json()["pid"]
        assert client.post(f"/api/workers/{base.id}/unload").json() == {"model_id": base.id, "unloaded": True}
        missing = client.post(f"/api/workers/{base.id}/unload")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert client.post("/api/workers/9999/load").status_code == 404


def test_the_worker_backend_is_chosen_per_model(wb, starter, served):
    from app.core.errors import InvalidInput
    from app.models import registry

    assert workers.choose_backend(starter, on_gpu=False) == "huggingface"
    mv = registry.edit_model(wb, starter.id, worker_backend="vllm")
    assert mv.meta["worker_backend"] == "vllm"
    with pytest.raises(InvalidInput, match="needs a GPU"):
        model_engines(wb).engine(mv)
    assert row_of(wb, starter.id) is None  # nothing was started
    assert "worker_backend" not in registry.edit_model(wb, starter.id, worker_backend="auto").meta
    with pytest.raises(InvalidInput, match="unknown worker backend"):
        registry.edit_model(wb, starter.id, worker_backend="tgi")
    with pytest.raises(InvalidInput, match="served elsewhere"):
        registry.edit_model(wb, served[0].id, worker_backend="huggingface")
    with pytest.raises(InvalidInput, match="served elsewhere"):
        workers.load_model(wb, served[0].id)


def start_app(home, port: int):
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--storage", str(home)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.2)


def test_the_app_adopts_its_workers_after_a_crash_and_stops_them_on_shutdown(tmp_path, starter_dir):
    from app.models import registry
    from tests.conftest import free_port, make_workbench

    home = tmp_path / "home"
    setup = make_workbench(home)
    base = registry.register_base_model(setup, "starter", str(starter_dir))
    setup.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/workers/{base.id}"
    app = start_app(home, port)
    try:
        pid = httpx.post(f"{url}/load", timeout=120).json()["pid"]
        app.kill()  # the app dies without stopping anything
        app.wait(timeout=10)
        assert not gone(pid, within=1)  # the worker outlives it...
        app = start_app(home, port)
        assert httpx.get(url).json()["pid"] == pid  # ...and the next app adopts it
        app.terminate()  # a clean shutdown stops it
        app.wait(timeout=30)
        assert gone(pid)
    finally:
        if app.poll() is None:
            app.kill()
        with contextlib.suppress(NameError, psutil.Error):
            psutil.Process(pid).kill()
