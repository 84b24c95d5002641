"""The one-click starter fine-tune, for real: its answers to questions it was never shown
are short readable sentences, where the untrained starter's are not."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.core.tables import ModelVersion
from app.models import registry
from app.train import quickstart, training
from tests.conftest import ROOT

# Other wordings of the sample questions, and greetings: none is in the training file.
UNSEEN = ["Tell me the color of a plum.", "Why do we go to the bakery?", "What food does a mouse like?",
          "Tell me the opposite of loud.", "What is 6 plus 2?", "Why do people go to station?",
          "Hey there!", "Could you help me?"]
WORD = re.compile(r"[A-Za-z0-9]+")


def shipped_words() -> set[str]:
    texts = [ROOT / "data/starter_corpus.txt", quickstart.SAMPLE_SFT]
    return {w.lower() for p in texts for w in WORD.findall(p.read_text(encoding="utf-8"))}


def readable(text: str, finish: str, vocab: set[str]) -> bool:
    """A short sentence of real words that ends where the model chose to stop."""
    words = [w.lower() for w in WORD.findall(text)]
    if finish != "stop" or not words or len(words) > 25 or not text.rstrip().endswith((".", "!", "?")):
        return False
    looping = any(len(set(words[i:i + 4])) == 1 for i in range(len(words) - 3))
    return not looping and sum(w in vocab for w in words) >= 0.9 * len(words)


def greedy_answers(mv: ModelVersion, prompts: list[str]) -> list[tuple[str, str]]:
    """(text, finish reason) per prompt, from LLaMA-Factory's ChatModel as the workers run it."""
    from llamafactory.chat import ChatModel

    from app.inference.eos import stop_at_declared_eos

    args = {"model_name_or_path": mv.base_path, "template": mv.template, "infer_backend": "huggingface"}
    if mv.adapter_path:
        args.update(adapter_name_or_path=mv.adapter_path, finetuning_type=mv.finetuning_type)
    chat = ChatModel(args)
    stop_at_declared_eos(chat.engine, Path(mv.base_path))
    replies = [chat.chat([{"role": "user", "content": p}], max_new_tokens=48, do_sample=False)[0]
               for p in prompts]
    return [(r.response_text, r.finish_reason) for r in replies]


def mark_starter(wb, mv: ModelVersion) -> None:
    """The cached starter, flagged as the build job flags the one it registers."""
    with wb.session() as s:
        row = s.get(ModelVersion, mv.id)
        row.meta = {**(row.meta or {}), "starter": {"cached": True}}
        s.add(row)
        s.commit()


def test_the_starter_fine_tune_answers_unseen_questions_in_sentences(wb, starter):
    trained = {json.loads(line)["instruction"] for line in quickstart.STARTER_CHAT.read_text().splitlines()}
    assert not trained & set(UNSEEN)
    vocab = shipped_words()
    before = [readable(t, f, vocab) for t, f in greedy_answers(starter, UNSEEN)]
    assert sum(before) <= 2, "the criterion should reject the untrained starter's answers"

    mark_starter(wb, starter)
    run = training.wait_run(wb, quickstart.start_starter_sft(wb).id, 600)
    assert run.status == "succeeded", run.error
    tuned = next(m for m in registry.list_models(wb) if m.run_id == run.id)
    answers = greedy_answers(tuned, UNSEEN)
    bad = [(p, t, f) for p, (t, f) in zip(UNSEEN, answers, strict=True) if not readable(t, f, vocab)]
    assert len(bad) <= 1, bad
