"""Start-up time of `python launch.py`: seconds until the first HTTP 200 on /, against a bare
Gradio Blocks app (one Markdown, mounted on FastAPI and served by uvicorn the same way) on
the same machine.

Target: at most 1.3x the bare app. Prints one line per run and a summary.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TARGET = 1.3
BARE_APP = """
import sys
import gradio as gr
import uvicorn
from fastapi import FastAPI
with gr.Blocks() as demo:
    gr.Markdown("hello")
uvicorn.run(gr.mount_gradio_app(FastAPI(), demo, path="/"), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning")
"""


def one_run(bare: bool = False) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        command = ([sys.executable, "-c", BARE_APP, str(port)] if bare else
                   [sys.executable, "launch.py", "--port", str(port), "--storage", home])
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                        if r.status == 200:
                            return time.perf_counter() - start
                except OSError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("launch.py exited before answering")
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def compile_project() -> None:
    """Write the bytecode of Forgeloop's own modules, as a first `python launch.py` would: with
    PYTHONDONTWRITEBYTECODE set (as in some sandboxes) every run would compile them again,
    while Gradio's (the bare app's) were compiled when it was installed."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "app", "tabs", "launch.py"], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    compile_project()
    times, bare = [], []
    for i in range(RUNS):  # interleaved, so both see the same machine load
        bare.append(one_run(bare=True))
        times.append(one_run())
        print(f"run {i + 1}: launch.py {times[-1]:.2f} s, bare Gradio {bare[-1]:.2f} s")
    ours, base = statistics.median(times), statistics.median(bare)
    print(f"startup: median {ours:.2f} s (max {max(times):.2f} s) vs bare Gradio {base:.2f} s over {RUNS} "
          f"runs: {ours / base:.2f}x (target <= {TARGET:g}x)")


if __name__ == "__main__":
    main()
