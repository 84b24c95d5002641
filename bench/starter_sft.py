"""The first minute of a new user: build the starter (as the Create starter model button
does), run the one-click starter SFT, and print both wall times and the fine-tune's greedy
answers, each marked readable or not (tests/test_starter_sft.py's criterion), to questions
from its training data and to other wordings it never saw.

Runs in a temporary storage dir; needs no GPU and no network.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.models import registry  # noqa: E402
from app.train import quickstart, training  # noqa: E402
from tests.conftest import make_workbench  # noqa: E402
from tests.test_starter_sft import UNSEEN, greedy_answers, readable, shipped_words  # noqa: E402

SEEN = ["Hello!", "Who are you?", "What color is milk?", "What is the opposite of hard?",
        "Which day comes after Monday?", "Tell me about the owl."]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wb = make_workbench(Path(tmp) / "home")
        try:
            started = time.monotonic()
            registry.create_starter_model(wb)
            built = time.monotonic() - started
            run = training.wait_run(wb, quickstart.start_starter_sft(wb).id, 900)
            tuned_s = time.monotonic() - started - built
            if run.status != "succeeded":
                raise SystemExit(f"starter SFT {run.status}: {run.error}")
            print(f"starter build {built:.1f} s, starter SFT {tuned_s:.1f} s, "
                  f"together {built + tuned_s:.1f} s")
            tuned = next(m for m in registry.list_models(wb) if m.run_id == run.id)
            vocab = shipped_words()
            for label, prompts in (("seen", SEEN), ("unseen", UNSEEN)):
                answers = greedy_answers(tuned, prompts)
                ok = sum(readable(t, f, vocab) for t, f in answers)
                print(f"\n{label}: {ok}/{len(prompts)} readable")
                for prompt, (text, finish) in zip(prompts, answers, strict=True):
                    mark = "" if readable(text, finish, vocab) else "  [not readable]"
                    print(f"  {prompt!r} -> {text!r}{mark}")
        finally:
            wb.close()


if __name__ == "__main__":
    main()
