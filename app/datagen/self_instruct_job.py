"""Self-Instruct as a job process: ``python -m app.datagen.self_instruct_job PLAN_JSON``.

The plan names the teacher (its registry row), so the process reaches it the way the
arena does (Ollama, OpenAI-compatible or a local model's worker) without opening the
database. Rows go to ``rows.jsonl``; registering them as a dataset is the finish step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from app.core.errors import ForgeloopError
from app.core.job_models import exit_job
from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.core.tables import ModelVersion
from app.data.self_instruct import Task, load_seeds
from app.datagen.self_instruct_run import AnswerCache, RunState, generate
from app.inference.chat_engines import ModelEngines, job_engines
from app.inference.generation import Finish, GenSettings


def main(argv: list[str]) -> int:
    engines = job_engines()
    try:
        return run(argv, engines)
    finally:
        engines.close()  # the workers this process started for a local teacher


def run(argv: list[str], engines: ModelEngines) -> int:
    plan = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    folder = Path(argv[0]).parent
    if key := os.environ.get("FORGELOOP_TEACHER_API_KEY"):  # KEY_ENV of self_instruct_jobs
        plan["teacher"]["meta"] = {**(plan["teacher"].get("meta") or {}), "api_key": key}
    teacher = ModelVersion(**plan["teacher"])
    concurrency = int(plan.get("concurrency", 1))
    engine = engines.engine(teacher)
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
        write_rows(folder / "rows.jsonl", state.rows)  # what is kept survives a failure later
        counts = state.progress()
        print(f"round {state.rounds}/{plan['max_rounds']}: kept {counts['kept']}/{plan['target']}, "
              f"generated {counts['generated']}, rejected {counts['rejected']}, "
              f"teacher calls {cache.calls} (+{cache.hits} from the cache)", flush=True)
        if progress:
            report(progress, min(len(state.rows), plan["target"]), plan["target"], started,
                   status=f"round {state.rounds}: {counts['kept']} kept", rounds=state.rounds,
                   teacher_calls=cache.calls, cached_answers=cache.hits, **counts)

    seeds = [Task(**t) for t in plan["seeds"]] if plan.get("seeds") else load_seeds()
    print(f"teacher {teacher.name} ({teacher.kind}), {len(seeds)} seed tasks, "
          f"{concurrency} call(s) at once, target {plan['target']} rows", flush=True)
    try:
        state = generate(seeds, cache, plan["target"], plan["max_rounds"], plan["seed"], on_round,
                         concurrency)
    except ForgeloopError as e:  # e.g. the teacher went away: say so plainly, keep the rows
        kept = rows_in(folder / "rows.jsonl")
        print(f"the teacher failed: {e}\n{kept} rows kept so far and every answer received are "
              f"saved; resume this job to go on without asking for them again", file=sys.stderr)
        return 2
    write_rows(folder / "rows.jsonl", state.rows)
    result = {**state.progress(), "rounds": state.rounds, "teacher_calls": cache.calls,
              "cached_answers": cache.hits}
    print(f"done: {len(state.rows)} rows in {state.rounds} rounds", flush=True)
    if out := os.environ.get(RESULT_ENV):
        Path(out).write_text(json.dumps(result))
    return 0


def write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)  # never half a file, even when killed mid-write


def rows_in(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0


if __name__ == "__main__":
    exit_job(main(sys.argv[1:]))
