"""GPU figures, for a machine with an NVIDIA GPU (elsewhere it says so and exits with 2).

    python bench/gpu.py [--steps 40] [--rows 512] [--parts train,battle]

1. SFT-LoRA throughput on a random-weight Llama of about 0.7B parameters (the starter's
   vocabulary), rows of about 530 tokens: the shipped ``sft_lora`` recipe as the app plans
   it (micro-batch chosen from the free GPU memory, the effective batch kept) against the
   micro-batch fixed at the recipe's own 4 × 2. Target: planned >= 3x the fixed one.
2. A battle of two such local models vs the slower side alone (target <= 1.2x), with the
   arena's engines as the app configures them.
3. Peak GPU memory (nvidia-smi, sampled every 0.2 s) during each part.

Building the model and the data is not timed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from contextlib import contextmanager  # noqa: E402

from app.bootstrap import open_workbench  # noqa: E402
from app.core.hardware import detect  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from app.data.datasets import register_rows  # noqa: E402
from app.inference.generation import GenSettings  # noqa: E402
from app.models import registry  # noqa: E402
from app.train import training  # noqa: E402

# The vocabulary is the starter tokenizer's, so every generated id decodes to text.
SHAPE = {"hidden_size": 1536, "num_hidden_layers": 24, "intermediate_size": 4096, "num_attention_heads": 16,
         "num_key_value_heads": 16, "max_position_embeddings": 2048}
ROW_TOKENS = 530
THROUGHPUT_TARGET, BATTLE_TARGET = 3.0, 1.2
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")


@contextmanager
def peak_memory(out: dict[str, int]):
    """The highest nvidia-smi ``memory.used`` (MiB, summed over GPUs) while the block runs."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            res = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            used = sum(int(x) for x in res.stdout.split() if x.strip().isdigit())
            out["peak_mib"] = max(out.get("peak_mib", 0), used)
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


def build_model(folder: Path, seed: int, tokenizer_dir: Path) -> Path:
    """A random-weight Llama of about 0.7B parameters in bf16, with the starter's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE, vocab_size=len(tok), tie_word_embeddings=False,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id, torch_dtype="bfloat16"))
    with torch.no_grad():  # random weights must not end an answer early: special tokens score 0
        for special in {tok.eos_token_id, tok.pad_token_id, tok.bos_token_id} - {None}:
            model.lm_head.weight[special] = 0
    model.to(torch.bfloat16).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, folder / name)
    print(f"built {folder.name}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
    return folder


def long_rows(tokenizer_dir: Path, n: int) -> list[dict[str, str]]:
    """SFT rows of about ROW_TOKENS tokens, from the shipped sample's answers."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    sample = [json.loads(x) for x in (ROOT / "data/samples/sft_starter.jsonl").read_text().splitlines() if x]
    rows, i = [], 0
    while len(rows) < n:
        text = ""
        while len(tok(text)["input_ids"]) < ROW_TOKENS:
            text += " " + sample[i % len(sample)]["output"]
            i += 1
        prompt = sample[i % len(sample)]["instruction"]
        rows.append({"instruction": prompt, "input": "", "output": text.strip()})
    return rows


def train_once(wb, base_id: int, data_id: int, name: str, steps: int, overrides: dict) -> dict:
    req = training.TrainRequest("sft_lora", base_id, [data_id], name=name,
                                overrides={"max_steps": steps, "save_steps": 10_000, "logging_steps": 5,
                                           **overrides})
    mem: dict[str, int] = {}
    with peak_memory(mem):
        run = training.wait_run(wb, training.start_run(wb, req).id, 3600)
    assert run.status == "succeeded", run.error
    results = json.loads((Path(run.output_dir) / "all_results.json").read_text())
    cfg = run.config
    print(f"  {name}: micro-batch {cfg['per_device_train_batch_size']} × accumulation "
          f"{cfg['gradient_accumulation_steps']}: {results['train_samples_per_second']:.1f} samples/s, "
          f"peak GPU memory {mem.get('peak_mib', 0) / 1024:.1f} GiB "
          f"({training.run_memory(run).get('reason', '')})")
    return {"samples_per_s": results["train_samples_per_second"], "peak_mib": mem.get("peak_mib", 0)}


def battles_ratio(wb, a, b) -> float:
    from bench.arena import time_battles

    gen = GenSettings(temperature=0.0, max_new_tokens=128)
    prompts = ["Tell me a story about a lighthouse keeper.", "Explain how rain forms.",
               "List ten animals and one fact about each."]
    mem: dict[str, int] = {}
    with peak_memory(mem):
        ratios = time_battles(wb, a, b, prompts, 3, gen, "gpu")
    print(f"  peak GPU memory during battles {mem.get('peak_mib', 0) / 1024:.1f} GiB")
    from app.inference.workers import worker_status

    for w in worker_status(wb):
        print(f"  worker {w['model']}: {w['device']}, {w['backend']}, memory share {w['memory_fraction']}, "
              f"{(w['gpu_bytes'] or 0) / 2**30:.1f} GiB reserved, {w['tokens_per_s']} tokens/s")
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--parts", default="train,battle", help="which parts to run (comma-separated)")
    args = parser.parse_args()
    hw = detect()
    if not hw.gpus:
        print("bench/gpu.py measures GPU training and battles, and this machine has no NVIDIA GPU "
              f"({'; '.join(hw.notes) or 'nvidia-smi listed none'}): nothing measured.")
        sys.exit(2)
    print("GPUs:", "; ".join(g.label for g in hw.gpus))
    home = Path(tempfile.mkdtemp(prefix="forgeloop-gpu-"))
    try:
        from app.models.starter_model import build_starter_model

        tok_dir = home / "starter"
        build_starter_model(tok_dir)
        wb = open_workbench(Settings(home=home / "home", job_env={"HF_HUB_OFFLINE": "1"}))
        try:
            a = registry.register_base_model(wb, "llama-a", str(build_model(home / "llama-a", 0, tok_dir)))
            parts = set(args.parts.split(","))
            if "train" in parts:
                data = register_rows(wb, "long-rows", "sft", long_rows(tok_dir, args.rows), fmt="alpaca")
                print(f"1. SFT-LoRA, {args.rows} rows of ~{ROW_TOKENS} tokens, {args.steps} steps:")
                old = train_once(wb, a.id, data.id, "recipe-batch", args.steps,
                                 {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2})
                planned = train_once(wb, a.id, data.id, "planned-batch", args.steps, {})
                gain = planned["samples_per_s"] / old["samples_per_s"]
                print(f"   planned vs recipe micro-batch: {gain:.2f}x (target >= {THROUGHPUT_TARGET:g}x)")
            if "battle" in parts:
                b_dir = build_model(home / "llama-b", 1, tok_dir)
                b = registry.register_base_model(wb, "llama-b", str(b_dir))
                print("2. battles of two local 0.7B models:")
                ratio = battles_ratio(wb, a, b)
                print(f"   battle vs slower side alone: median {ratio:.2f}x (target <= {BATTLE_TARGET:g}x)")
        finally:
            wb.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
