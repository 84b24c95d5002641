"""Time the ROUGE-L novelty filter over 50,000 synthetic Self-Instruct candidates.

Candidates mimic teacher output: instruction-like sentences over a Zipf-distributed
vocabulary, with a third of them light rewrites of earlier ones (the near-duplicates
the filter exists to catch). Seeds from data/seed_tasks.jsonl are kept first.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a plain script from anywhere: make the repo root importable before importing app.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

from app.data.rouge_novelty import NoveltyIndex  # noqa: E402

N_CANDIDATES = 50_000
TARGET_S = 60.0
ROOT = Path(__file__).resolve().parent.parent
VERBS = (
    "write give list explain describe summarize classify suggest create rewrite translate "
    "compare identify find generate name recommend convert answer tell outline propose"
).split()
GLUE = "a the of for to about in and with that your an on how what why".split()
SYLLABLES = "ka ro mi tel san dor vi lu pem ash or en qu zi bar nol fe tu rin gas".split()


def make_vocab(rng: random.Random, size: int = 8000) -> list[str]:
    words = {"".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(size * 2)}
    vocab = sorted(words)[:size]
    rng.shuffle(vocab)  # Zipf rank must not follow spelling
    return vocab


def candidates(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    cum, total = [], 0.0
    for rank in range(len(vocab)):  # Zipf
        total += 1 / (rank + 1)
        cum.append(total)
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < 0.33:
            words = rng.choice(out).split()
            for _ in range(rng.randint(1, 3)):  # a light rewrite: swap, drop or add a word
                pos = rng.randrange(len(words))
                op = rng.random()
                if op < 0.4:
                    words[pos] = rng.choices(vocab, cum_weights=cum)[0]
                elif op < 0.7 and len(words) > 4:
                    del words[pos]
                else:
                    words.insert(pos, rng.choice(GLUE))
            out.append(" ".join(words))
            continue
        length = rng.randint(5, 25)
        words = [rng.choice(VERBS).capitalize()]
        while len(words) < length:
            words.append(rng.choice(GLUE) if rng.random() < 0.35 else rng.choices(vocab, cum_weights=cum)[0])
        out.append(" ".join(words) + ".")
    return out


def main() -> None:
    seeds = [json.loads(line)["instruction"] for line in (ROOT / "data/seed_tasks.jsonl").open()]
    cands = candidates(N_CANDIDATES)
    start, cpu = time.perf_counter(), time.process_time()
    index = NoveltyIndex()
    for s in seeds:
        index.add(s)
    kept = sum(index.add_if_novel(c)[0] for c in cands)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"selfinstruct filter: {N_CANDIDATES} candidates in {elapsed:.1f} s ({cpu:.1f} s CPU), kept {kept}, "
        f"{index.pairs_scored} pairs scored of {N_CANDIDATES * (len(seeds) + kept // 2)} naive "
        f"(target <= {TARGET_S:.0f} s)"
    )


if __name__ == "__main__":
    main()
