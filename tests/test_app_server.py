"""The web app: fast start without torch, HTTP 200, login when --auth is given."""

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
        "heavy = [m for m in ('torch', 'transformers', 'llamafactory') if m in sys.modules];"
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
