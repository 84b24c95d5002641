"""Start-up time of `python launch.py`: seconds until the first HTTP 200 on /.

Target: <= 4 s on the 2-core reference machine. Prints one line per run and a summary.
"""

from __future__ import annotations

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


def one_run() -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--storage", home],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def main() -> None:
    times = []
    for i in range(RUNS):
        t = one_run()
        times.append(t)
        print(f"run {i + 1}: {t:.2f} s to HTTP 200")
    print(f"startup: median {statistics.median(times):.2f} s, max {max(times):.2f} s "
          f"over {RUNS} runs (target <= 4 s)")


if __name__ == "__main__":
    main()
