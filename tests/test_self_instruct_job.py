"""The Self-Instruct job against the Ollama stand-in, whose brain writes tasks and
instances derived from each prompt; and the answer cache that makes resuming free."""

import hashlib
import json
import re
from pathlib import Path

from app.data.datasets import get_dataset
from app.data.self_instruct import load_seeds
from app.datagen.self_instruct_jobs import start_selfinstruct
from app.datagen.self_instruct_run import AnswerCache, generate
from app.models import registry
from tests.ollama_stub import OllamaStub

TOPICS = ("rivers", "bread", "friendship", "volcanoes", "bicycles", "chess", "tea", "owls", "rain",
          "kites", "maths", "gardens", "trains", "honey", "glaciers", "poetry", "markets", "sleep")


def _pick(prompt: str, salt: str, options: tuple[str, ...]) -> str:
    digest = hashlib.sha256((salt + prompt).encode()).digest()
    return options[digest[0] % len(options)]


def teacher_brain(model: str, prompt: str) -> str:
    """A stand-in teacher: new tasks built from the words of the tasks it was shown,
    plus one a filter must catch; Yes/No by the task's verb; instances from the task."""
    if prompt.startswith("Come up with a series of tasks"):
        shown = re.findall(r"^\d+\. (.*)$", prompt, re.M)
        words = sorted({w.strip(".,?!'").lower() for w in " ".join(shown).split() if len(w) > 4})
        pool = tuple(words) + TOPICS
        w = [_pick(prompt, str(k), pool) for k in range(12)]
        return (f" Explain the link between {w[0]}, {w[1]}, {w[2]} and {w[3]} for a {w[4]} reader.\n"
                f"10. Classify whether {w[5]} {w[6]} {w[7]} sounds positive or negative.\n"
                f"11. Draw a picture of {w[8]}.\n"
                f"12. Write a program that sorts {w[9]} records.\n"
                f"13. Explain the link between {w[0]}, {w[1]}, {w[2]} and {w[3]} for a {w[4]} reader now.\n")
    if prompt.startswith("Can the following task"):
        return "Yes" if prompt.rsplit("Task: ", 1)[1].startswith("Classify") else "No"
    task = prompt.rsplit("Task: ", 1)[1].strip()
    if prompt.startswith("Given the classification task"):
        return (f"Class label: Positive\nInput: I loved every minute of {task.split()[-4]}.\n"
                f"Class label: Negative\nInput: A dull, tiring afternoon.")
    return f"Example 1\nInput: {task}\nOutput: A short answer about {task.split()[2]}.\n"


def test_job_registers_an_alpaca_dataset_with_provenance(wb):
    with OllamaStub(models=["teacher"], brain=teacher_brain) as stub:
        mv = registry.register_remote_model(wb, "teacher", "ollama", stub.url, "teacher")
        job = wb.jobs.wait(start_selfinstruct(wb, mv.id, "si-small", target=12, max_rounds=30).id, 120)
    assert job.status == "succeeded", job.error
    ds = get_dataset(wb, job.result["dataset_id"])
    assert (ds.kind, ds.format, ds.source) == ("sft", "alpaca", "self-instruct")
    rows = [json.loads(line) for line in Path(ds.path).read_text().splitlines()]
    assert len(rows) == ds.num_rows >= 12
    assert set(rows[0]) == {"instruction", "input", "output"}
    prov = ds.meta["provenance"]
    assert prov["teacher"] == "teacher" and prov["method"] == "self-instruct"
    assert prov["classification_rows"] > 0
    # every round offers a blacklisted task, a code task and a near-duplicate (the last
    # round may stop early, once the target is met)
    rejected, rounds = prov["rejected"], prov["rounds"]
    assert rounds - 1 <= rejected["blacklist"] == rejected["program"] <= rounds
    assert rejected["similar"] >= rounds - 1
    folder = Path(job.cwd)
    last = json.loads((folder / "progress.jsonl").read_text().splitlines()[-1])
    assert last["kept"] == len(rows) and 5 * (rounds - 1) < last["generated"] <= 5 * rounds
    assert last["teacher_calls"] == len((folder / "teacher_answers.jsonl").read_text().splitlines())


def test_resume_replays_cached_answers_without_calling_the_teacher(tmp_path):
    calls: list[str] = []

    def teacher(prompt: str) -> tuple[str, bool]:
        calls.append(prompt)
        return teacher_brain("t", prompt), False

    seeds = load_seeds()
    first = generate(seeds, AnswerCache(tmp_path / "answers.jsonl", teacher), target=8, max_rounds=20)
    n_calls = len(calls)
    assert n_calls > 0 and len(first.rows) >= 8
    again = AnswerCache(tmp_path / "answers.jsonl", teacher)
    second = generate(seeds, again, target=8, max_rounds=20)
    assert len(calls) == n_calls and again.calls == 0 and again.hits == n_calls
    assert second.rows == first.rows
    # a longer run goes on from the cache and only asks for what is new
    longer = AnswerCache(tmp_path / "answers.jsonl", teacher)
    third = generate(seeds, longer, target=16, max_rounds=40)
    assert third.rows[: len(first.rows)] == first.rows and longer.hits == n_calls
    assert longer.calls == len(calls) - n_calls > 0


def test_rest_route_and_named_endpoint_start_the_job(tmp_path):
    import gradio as gr
    from fastapi.testclient import TestClient

    import launch
    from app.core.settings import Settings
    from tabs import data_tab

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        with OllamaStub(models=["teacher"], brain=teacher_brain) as stub, TestClient(server) as client:
            mv = registry.register_remote_model(wb, "teacher", "ollama", stub.url, "teacher")
            r = client.post("/api/datasets/selfinstruct",
                            json={"teacher_id": mv.id, "name": "via-rest", "target": 3})
            assert r.status_code == 202, r.text
            job = wb.jobs.wait(r.json()["id"], 120)
            assert job.status == "succeeded", job.error
            assert get_dataset(wb, job.result["dataset_id"]).name == "via-rest"
            bad = client.post("/api/datasets/selfinstruct",
                              json={"teacher_id": mv.id, "name": "x", "target": 0})
            assert bad.status_code == 422 and "target" in bad.text
            taken = client.post("/api/datasets/selfinstruct", json={"teacher_id": mv.id, "name": "VIA-rest"})
            assert taken.status_code == 409

            with gr.Blocks() as demo, gr.Tabs():
                data_tab.build(wb)
            fns = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}
            said = fns["start_selfinstruct"](mv.id, "via-ui", 2)
            assert said.startswith("Job ") and "via-ui" in said
            job_id = int(said.split()[1].rstrip(":"))
            assert wb.jobs.wait(job_id, 120).status == "succeeded"
    finally:
        wb.close()


def test_the_teachers_api_key_stays_out_of_the_plan_file(wb):
    with OllamaStub(models=["teacher"], brain=teacher_brain) as stub:
        mv = registry.register_remote_model(wb, "oa", "openai", stub.url + "/v1", "teacher",
                                            api_key="sekret-key")
        job = wb.jobs.wait(start_selfinstruct(wb, mv.id, "si-key", target=2, max_rounds=1).id, 120)
    assert "sekret-key" not in (Path(job.cwd) / "plan.json").read_text()
    assert job.status == "failed" and "sekret-key" not in (job.error or "")
    assert job.params["teacher"] == "oa"


def test_a_local_teacher_runs_in_the_job_process(wb, starter):
    # The tiny starter cannot write tasks worth keeping; what matters is that the job
    # loads it the arena's way and asks it, and that an empty result leaves no dataset.
    job = wb.jobs.wait(start_selfinstruct(wb, starter.id, "si-local", target=1, max_rounds=1,
                                          max_new_tokens=32).id, 300)
    answers = (Path(job.cwd) / "teacher_answers.jsonl").read_text().splitlines()
    assert len(answers) >= 1 and json.loads(answers[0])["answer"].strip()
    if job.status == "failed":
        assert "no usable task" in job.error
    else:
        assert job.status == "succeeded" and get_dataset(wb, job.result["dataset_id"]).num_rows >= 1


def test_a_cancelled_run_resumes_without_asking_the_teacher_again(wb):
    import time

    from app.datagen.self_instruct_jobs import resume_selfinstruct

    asked: list[str] = []

    def counting(model: str, prompt: str) -> str:
        asked.append(prompt)
        return teacher_brain(model, prompt)

    with OllamaStub(models=["teacher"], brain=counting, chunk_delay=0.01) as stub:
        mv = registry.register_remote_model(wb, "teacher", "ollama", stub.url, "teacher")
        job = start_selfinstruct(wb, mv.id, "si-resumed", target=12, max_rounds=30)
        answers = Path(wb.jobs.get(job.id).cwd) / "teacher_answers.jsonl"
        deadline = time.monotonic() + 60
        while not (answers.is_file() and len(answers.read_text().splitlines()) >= 3):
            assert time.monotonic() < deadline, "the teacher was never asked"
            time.sleep(0.1)
        stopped = wb.jobs.wait(wb.jobs.cancel(job.id).id, 60)
        assert stopped.status == "cancelled"
        answered = {json.loads(line)["key"] for line in answers.read_text().splitlines() if line.strip()}
        before = len(asked)
        done = wb.jobs.wait(resume_selfinstruct(wb, job.id).id, 120)
    assert done.status == "succeeded", done.error
    assert get_dataset(wb, done.result["dataset_id"]).num_rows >= 12
    again = {hashlib.sha256(p.encode()).hexdigest() for p in asked[before:]}
    assert answered and not again & answered  # no answer the cache held was asked for again
    import pytest

    from app.core.errors import Conflict

    with pytest.raises(Conflict, match="already finished"):
        resume_selfinstruct(wb, done.id)
