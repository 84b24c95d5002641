"""The loop's proof, as figures: one round of votes → DPO on the starter model, judged
by an oracle (tests/loop_proof.py; tests/test_loop_proof.py asserts on the same round).

    python bench/loop.py [--samples 4]

Prints the parent's and the child's pass rate on held-out prompts (the oracle's rule as an
eval suite) with 95% intervals, the z of the rise, the child's oracle-judged win rate
against the parent with its interval, the votes and pairs used, and the wall time of
each stage. Everything runs on CPU; the starter model is built first (not timed).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from fastapi.testclient import TestClient  # noqa: E402


def main() -> None:
    import launch
    from app.core.settings import Settings
    from app.models.starter_model import build_starter_model
    from tests.loop_proof import run_round

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4, help="answers per held-out prompt and model")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forgeloop-loop-"))
    build_starter_model(work / "starter")
    server, _, wb = launch.build_server(Settings(home=work / "home", voter_messages_per_minute=0,
                                                 voter_votes_per_minute=0, job_env={"HF_HUB_OFFLINE": "1"}))
    started = time.monotonic()
    try:
        with TestClient(server) as client:
            figures = run_round(client, wb, work / "starter", samples=args.samples)
    finally:
        wb.close()
    pw = figures["pairwise"]
    print(f"votes: {figures['votes']} → {figures['dpo_pairs']} DPO pairs")
    print(f"schedule: {figures['schedule']} → {figures['dpo_steps']} steps, "
          f"loss {figures['dpo_loss'][0]:.3f} → {figures['dpo_loss'][1]:.3f}")
    lo, hi = figures["parent_interval"]
    print(f"parent pass rate {figures['parent_rate']:.3f} [{lo:.3f}, {hi:.3f}] "
          f"over {figures['answers_per_model']} answers")
    lo, hi = figures["child_interval"]
    print(f"child  pass rate {figures['child_rate']:.3f} [{lo:.3f}, {hi:.3f}]  (z = {figures['z']:.2f})")
    print(f"child vs parent, oracle-judged: win rate {pw['rate']:.3f} [{pw['low']:.3f}, {pw['high']:.3f}] "
          f"({pw['wins']} wins, {pw['losses']} losses, {pw['ties']} ties counted half)")
    print(f"gate (says-is, margin 0): {figures['gate']} — {figures['gate_reason']}; "
          f"child in the arena: {figures['child_in_arena']}")
    print("wall time per stage (s):", json.dumps(figures["timings"]),
          f"total {time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
