"""The assistant's actions, as the REST API and the tabs call them: suggest settings,
detect a dataset's task, explain a run, diagnose a failed one. The rules give every
value and verdict; an optional LLM (any registered model; by default an Ollama one when
one is registered) only rewrites the explanation, within a time limit, and when it does
not answer the rule-based text is shown and says so."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.assistant.diagnose import diagnose
from app.assistant.explain import explain_curves
from app.assistant.suggest import suggest_settings
from app.assistant.task_detect import detect_task
from app.core.errors import InvalidInput
from app.core.progress_log import TRAINER_LOG, ProgressTail
from app.core.tables import ModelVersion
from app.data.datasets import get_dataset, read_rows
from app.inference.chat_engines import model_engines
from app.inference.generation import Finish, GenSettings
from app.models.registry import get_model
from app.train.training import get_run

if TYPE_CHECKING:
    from app.core.workbench import Workbench

LLM_TIMEOUT_S = 60.0
LLM_GEN = GenSettings(temperature=0.0, max_new_tokens=300)
PROMPT = ("You are the assistant of an LLM fine-tuning workbench. Rewrite the {what} below for the user "
          "in a few plain sentences. Keep every number, setting name and value exactly as given; do not "
          "add settings or values of your own.\n\n{text}")


def default_llm(wb: Workbench) -> ModelVersion | None:
    """The first Ollama model in the registry (a deployed version, or one registered by hand)."""
    with wb.session() as s:
        found = s.exec(select(ModelVersion).where(ModelVersion.kind == "ollama").order_by(ModelVersion.id))
        return found.first()


def rewrite(wb: Workbench, text: str, what: str, llm_model_id: int | None = None, use_llm: bool = True,
            timeout: float = LLM_TIMEOUT_S) -> dict[str, Any]:
    """{"text", "source": "llm" | "rules", "llm", "note"}: the wording of ``text`` by the
    chosen model (default: the first Ollama model) when it answers within ``timeout``,
    else ``text`` itself with the reason."""
    mv = None
    if use_llm:
        mv = get_model(wb, llm_model_id) if llm_model_id else default_llm(wb)
    if mv is None:
        why = "no assistant model is registered" if use_llm else "asked for the rules only"
        return {"text": text, "source": "rules", "llm": None, "note": f"{why}: rule-based text"}
    out: dict[str, Any] = {}

    def ask() -> None:
        try:
            messages = [{"role": "user", "content": PROMPT.format(what=what, text=text)}]
            stream = model_engines(wb).engine(mv).stream(messages, LLM_GEN)
            out["text"] = "".join(p for p in stream if not isinstance(p, Finish)).strip()
        except Exception as e:  # noqa: BLE001 - any engine failure falls back to the rules
            out["error"] = str(e)

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        why = f"{mv.name} did not answer within {timeout:g} s"
    elif out.get("error"):
        why = f"{mv.name} failed: {out['error']}"
    elif not out.get("text"):
        why = f"{mv.name} answered nothing"
    else:
        return {"text": out["text"], "source": "llm", "llm": mv.name, "note": f"worded by {mv.name}",
                "rules": text}
    return {"text": text, "source": "rules", "llm": mv.name, "note": f"{why}: rule-based text"}


def suggest(wb: Workbench, model_id: int, dataset_ids: list[int], stage: str | None = None,
            gpus: list[int] | None = None, llm_model_id: int | None = None, use_llm: bool = True
            ) -> dict[str, Any]:
    s = suggest_settings(wb, model_id, dataset_ids, stage, gpus)
    return {**s.as_dict(), "model_id": model_id, "dataset_ids": list(dataset_ids),
            "explanation": rewrite(wb, s.text(), "training advice", llm_model_id, use_llm)}


def detect(wb: Workbench, dataset_id: int | None = None, rows: list[Any] | None = None) -> dict[str, Any]:
    if dataset_id is not None:
        rows = read_rows(Path(get_dataset(wb, dataset_id).path))
    if not rows:
        raise InvalidInput("give a dataset or some rows to look at")
    return detect_task(rows).as_dict()


def explain_run(wb: Workbench, run_id: int, llm_model_id: int | None = None, use_llm: bool = True
                ) -> dict[str, Any]:
    run = get_run(wb, run_id)
    tail = ProgressTail(Path(run.output_dir) / TRAINER_LOG)
    tail.poll()
    ex = explain_curves(tail.records, run.config or {})
    words = rewrite(wb, ex.text(), "reading of a training curve", llm_model_id, use_llm)
    return {"run_id": run.id, **ex.as_dict(), "explanation": words}


def diagnose_run(wb: Workbench, run_id: int, llm_model_id: int | None = None, use_llm: bool = True
                 ) -> dict[str, Any]:
    run = get_run(wb, run_id)
    job = run.job
    if job is None or job.status not in ("failed", "interrupted", "cancelled"):
        status = job.status if job else "unknown"
        raise InvalidInput(f"run {run.name!r} has not failed (it is {status}): nothing to diagnose")
    try:
        log = Path(job.log_path).read_text(errors="replace")[-200_000:]
    except OSError:
        log = ""
    findings = diagnose(f"{log}\n{job.error or ''}")
    text = "\n".join(f"- **{f.title}.** {f.fix}" for f in findings)
    words = rewrite(wb, text, "diagnosis of a failed training run", llm_model_id, use_llm)
    return {"run_id": run.id, "status": job.status, "findings": [f.as_dict() for f in findings],
            "explanation": words}
