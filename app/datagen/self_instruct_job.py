"""Self-Instruct as a job process: ``python -m app.datagen.self_instruct_job PLAN_JSON``.

The plan names the teacher (its registry row), so the process reaches it the way the
arena does (ChatCache: Ollama, OpenAI-compatible or a local model) without opening the
database. Rows go to ``rows.jsonl``; registering them as a dataset is the finish step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.core.tables import ModelVersion
from app.data.self_instruct import load_seeds
from app.datagen.self_instruct_run import AnswerCache, RunState, generate
from app.inference.chat_engines import ChatCache
from app.inference.generation import Finish, GenSettings


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    folder = Path(argv[0]).parent
    if key := os.environ.get("FORGELOOP_TEACHER_API_KEY"):  # KEY_ENV of self_instruct_jobs
        plan["teacher"]["meta"] = {**(plan["teacher"].get("meta") or {}), "api_key": key}
    teacher = ModelVersion(**plan["teacher"])
    engine = ChatCache(capacity=1).engine(teacher)
    gen = GenSettings(temperature=plan["temperature"], top_p=0.95, max_new_tokens=plan["max_new_tokens"])

    def ask(prompt: str) -> tuple[str, bool]:
        pieces, truncated = [], False
        for piece in engine.stream([{"role": "user", "content": prompt}], gen):
            if isinstance(piece, Finish):
                truncated = piece.reason == "length"
            else:
                pieces.append(piece)
        return "".join(pieces), truncated

    cache = AnswerCache(folder / "teacher_answers.jsonl", ask)
    progress, started = os.environ.get(PROGRESS_ENV), time.monotonic()

    def on_round(state: RunState) -> None:
        if progress:
            report(progress, min(len(state.rows), plan["target"]), plan["target"], started,
                   teacher_calls=cache.calls, cached_answers=cache.hits, **state.progress())

    state = generate(load_seeds(), cache, plan["target"], plan["max_rounds"], plan["seed"], on_round)
    with (folder / "rows.jsonl").open("w", encoding="utf-8") as f:
        for row in state.rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    result = {**state.progress(), "rounds": state.rounds, "teacher_calls": cache.calls,
              "cached_answers": cache.hits}
    if out := os.environ.get(RESULT_ENV):
        Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
