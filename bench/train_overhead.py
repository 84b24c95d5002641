"""Wall time of the same training YAML run by Forgeloop's job runner vs. by
`llamafactory-cli train` directly. Target: ratio <= 1.03.

Uses the starter model and the shipped sample SFT data, in a temporary storage dir.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.bootstrap import open_workbench  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from app.data import datasets  # noqa: E402
from app.models import registry  # noqa: E402
from app.train import training  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3  # more rounds for a noisy machine
OVERRIDES = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
             "learning_rate": 1e-3, "save_steps": 1000}


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        wb = open_workbench(Settings(home=Path(home)))
        base = registry.create_starter_model(wb)
        ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft", "sft")
        runner, direct = [], []
        for i in range(ROUNDS):
            start = time.perf_counter()
            run = training.start_run(wb, training.TrainRequest("sft_lora", base.id, [ds.id],
                                                               name=f"bench-{i}", overrides=OVERRIDES))
            run = training.wait_run(wb, run.id, timeout=900)
            runner.append(time.perf_counter() - start)
            assert run.status == "succeeded", run.error

            cfg = training.run_dir(run) / "config.yaml"
            text = cfg.read_text().replace(run.output_dir, run.output_dir + "-direct")
            direct_cfg = cfg.with_name("config-direct.yaml")
            direct_cfg.write_text(text)
            env = {**os.environ, **wb.settings.job_env, **run.env}
            start = time.perf_counter()
            subprocess.run([training.cli_path(), "train", str(direct_cfg)], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            direct.append(time.perf_counter() - start)
            print(f"round {i + 1}: runner {runner[-1]:.2f} s, direct {direct[-1]:.2f} s")
        wb.close()
    ratio = statistics.median(runner) / statistics.median(direct)
    print(f"train overhead: runner median {statistics.median(runner):.2f} s vs direct "
          f"{statistics.median(direct):.2f} s -> ratio {ratio:.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
