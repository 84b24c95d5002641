"""A stand-in for ``llamafactory-cli train`` in job-runner tests: it takes seconds, not a
model. ``python tests/fake_trainer.py OUTPUT_DIR STEPS DELAY [ok|fail|eval|oom]``.

Like LLaMA-Factory it appends one ``trainer_log.jsonl`` record per step, stops at the next
step on SIGABRT (or SIGTERM) and still saves its "adapter", and writes
``all_results.json`` only when it ran to the end; ``eval`` also evaluates after the last
step (an ``eval_loss`` record, and ``eval_loss`` in the results). It drops a ``started``
marker beside the output so a test can tell whether a withdrawn job was ever launched.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

out, steps, delay = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "ok"
out.mkdir(parents=True, exist_ok=True)
(out.parent / "started").write_text(str(os.getpid()))
stop = False


def ask_to_stop(*_) -> None:
    global stop
    stop = True


signal.signal(signal.SIGABRT, ask_to_stop)
signal.signal(signal.SIGTERM, ask_to_stop)
done = 0
for step in range(1, steps + 1):
    if stop:
        break
    time.sleep(delay)
    with open(out / "trainer_log.jsonl", "a") as f:
        f.write(json.dumps({"current_steps": step, "total_steps": steps, "loss": round(1 / step, 4),
                            "percentage": round(100 * step / steps, 2), "elapsed_time": "0:00:01",
                            "remaining_time": "0:00:01"}) + "\n")
    done = step
print(f"ran {done} of {steps} steps", flush=True)
if mode == "fail":
    print("Traceback (most recent call last):\nRuntimeError: the fake trainer failed", flush=True)
    sys.exit(3)
if mode == "oom":  # the last lines torch prints when a CUDA allocation fails
    print("Traceback (most recent call last):\n  File \"trainer.py\", line 1, in training_step\n"
          "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
          "capacity of 79.19 GiB of which 1.06 GiB is free.", flush=True)
    sys.exit(1)
(out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
results = {"train_loss": 1 / max(done, 1), "epoch": 1.0}
if mode == "eval":
    results["eval_loss"] = round(2 / max(done, 1), 4)
    with open(out / "trainer_log.jsonl", "a") as f:
        f.write(json.dumps({"current_steps": done, "total_steps": steps, "eval_loss": results["eval_loss"],
                            "percentage": 100.0, "elapsed_time": "0:00:01",
                            "remaining_time": "0:00:00"}) + "\n")
if not stop:
    (out / "all_results.json").write_text(json.dumps(results))
sys.exit(0)
