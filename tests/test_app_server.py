"""The web app: fast start without torch, HTTP 200, login when --auth is given."""

import os
import socket
import subprocess
import sys
import time

import httpx
from fastapi.testclient import TestClient

from app.core.settings import Settings
from tests.conftest import ROOT, free_port


def test_startup_imports_no_torch_and_answers(tmp_path):
    code = (
        "import sys, launch; from app.core.settings import Settings;"
        f"launch.build_server(Settings(home={str(tmp_path)!r}));"
        # pandas (and the matplotlib its Styler pulls in), scipy and ollama cost start-up
        # time without being needed before a table is filled or a model is called.
        "heavy = [m for m in ('torch', 'transformers', 'llamafactory', 'pandas', 'matplotlib', 'scipy',"
        " 'ollama') if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_launch_serves_the_workbench(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--storage",
                             str(tmp_path / "home")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no HTTP 200 within 60 s"
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.1)
        assert "Forgeloop" in r.text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["ok"] is True
        assert (tmp_path / "home" / "forgeloop.db").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_open_host_without_a_login_stops_before_binding(tmp_path):
    port = free_port()
    started = time.monotonic()
    env = {**os.environ, "FORGELOOP_AUTH": "", "FORGELOOP_INSECURE_NO_AUTH": ""}  # unset, whatever CI has
    out = subprocess.run([sys.executable, "launch.py", "--host", "0.0.0.0", "--port", str(port),
                          "--storage", str(tmp_path / "home")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert time.monotonic() - started < 30  # refused from the settings, before the app is built
    assert "0.0.0.0" in out.stderr and "--auth user:pass" in out.stderr and "--insecure-no-auth" in out.stderr
    assert not (tmp_path / "home" / "forgeloop.db").exists()  # no workbench was opened
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens


def test_auth_protects_the_ui(tmp_path):
    import launch

    server, _, wb = launch.build_server(Settings(home=tmp_path, auth=(("ann", "secret"),)))
    try:
        with TestClient(server) as anon:
            assert anon.get("/config").status_code == 401
            bad = anon.post("/login", data={"username": "ann", "password": "nope"})
            assert bad.status_code == 400
        with TestClient(server) as c:
            ok = c.post("/login", data={"username": "ann", "password": "secret"})
            assert ok.status_code == 200
            assert c.get("/config").status_code == 200
    finally:
        wb.close()
