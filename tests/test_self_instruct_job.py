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
    if "Task: " not in prompt:  # e.g. the connection test's probe
        return "Hello there, teacher speaking."
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
        with TestClient(server) as client:
            with OllamaStub(models=["teacher"], brain=teacher_brain) as stub:
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
                taken = client.post("/api/datasets/selfinstruct",
                                    json={"teacher_id": mv.id, "name": "VIA-rest"})
                assert taken.status_code == 409

                with gr.Blocks() as demo, gr.Tabs():
                    data_tab.build(wb)
                fns = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}
                pages = list(fns["start_selfinstruct"](mv.id, "via-ui", 2, 0, 0.7, 128, 0, 2, True, "", None))
                said, job_id = pages[0][0], pages[0][1]
                assert said.startswith(f"Job {job_id} started") and "via-ui" in said
                assert wb.jobs.get(job_id).status == "succeeded"
                final = pages[-1][2]  # the live view, followed until the job ended
                assert "succeeded" in final and "kept 2" in final and "fl-si-sample" in final
                watched = list(fns["selfinstruct_view"](job_id))[-1]
                assert watched == final
                assert fns["check_teacher"](mv.id).startswith(f"✓ teacher at {stub.url} answered in ")

                view = client.get(f"/api/datasets/selfinstruct/{job_id}").json()
                assert view["status"] == "succeeded" and view["counts"]["kept"] == 2
                assert len(view["sample"]) >= 1 and view["settings"]["max_new_tokens"] == 128
                ok = client.post(f"/api/models/{mv.id}/check").json()
                assert ok["reachable"] and ok["reply"] and ok["seconds"] > 0
            dead = client.post(f"/api/models/{mv.id}/check")  # the stand-in has stopped
            assert dead.status_code == 502 and dead.json()["error"]["code"] == "engine_error"
            assert stub.url.split("//")[1] in dead.json()["error"]["message"]
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


def test_parallel_teacher_calls_stay_within_the_limit_and_give_the_same_rows(tmp_path):
    import random
    import threading
    import time

    def run(concurrency: int, folder: str) -> tuple[list[dict], int]:
        lock, busy, peak = threading.Lock(), [0], [0]

        def teacher(prompt: str) -> tuple[str, bool]:
            with lock:
                busy[0] += 1
                peak[0] = max(peak[0], busy[0])
            time.sleep(random.uniform(0.001, 0.02))  # answers come back out of order
            with lock:
                busy[0] -= 1
            return teacher_brain("t", prompt), False

        (tmp_path / folder).mkdir()
        cache = AnswerCache(tmp_path / folder / "answers.jsonl", teacher)
        state = generate(load_seeds(), cache, target=20, max_rounds=40, seed=3, concurrency=concurrency)
        return state.rows, peak[0]

    rows_a, peak_a = run(4, "a")
    rows_b, peak_b = run(4, "b")
    assert rows_a == rows_b and len(rows_a) == 20  # the order answers arrive in does not matter
    assert 1 < peak_a <= 4 and 1 < peak_b <= 4
    rows_1, peak_1 = run(1, "c")
    assert peak_1 == 1 and len(rows_1) == 20


def test_own_seed_tasks_replace_the_shipped_ones(wb):
    import pytest

    from app.core.errors import InvalidInput

    mine = [f"Describe the sound a {animal} makes at night." for animal in
            ("cat", "dog", "owl", "fox", "frog", "cricket", "wolf", "bat")]
    shown: list[str] = []

    def recording(model: str, prompt: str) -> str:
        shown.append(prompt)
        return teacher_brain(model, prompt)

    with OllamaStub(models=["teacher"], brain=recording) as stub:
        mv = registry.register_remote_model(wb, "teacher", "ollama", stub.url, "teacher")
        with pytest.raises(InvalidInput, match="at least 8 different seed tasks"):
            start_selfinstruct(wb, mv.id, "too-few", seed_tasks="\n".join(mine[:5]), use_shipped_seeds=False)
        with pytest.raises(InvalidInput, match="seed line 2 is not valid JSON"):
            start_selfinstruct(wb, mv.id, "bad-json", seed_tasks=mine[0] + "\n{oops")
        job = wb.jobs.wait(start_selfinstruct(wb, mv.id, "own-seeds", target=4, max_rounds=10,
                                              seed_tasks="\n".join(mine), use_shipped_seeds=False,
                                              concurrency=1).id, 120)
    assert job.status == "succeeded", job.error
    first = next(p for p in shown if p.startswith("Come up with a series of tasks"))
    listed = re.findall(r"^\d+\. (.*)$", first, re.M)
    assert len(listed) == 8 and set(listed) <= set(mine)
    prov = get_dataset(wb, job.result["dataset_id"]).meta["provenance"]
    assert prov["seed_tasks"] == {"shipped": None, "user": 8, "total": 8}
    log = Path(job.log_path).read_text()
    assert "8 seed tasks" in log and "round 1/10: kept" in log and "done: " in log


def test_a_killed_run_and_a_vanished_teacher_both_resume_from_the_cache(wb):
    import os
    import signal
    import time

    from app.datagen.self_instruct_jobs import resume_selfinstruct, selfinstruct_view

    with OllamaStub(models=["teacher"], brain=teacher_brain, chunk_delay=0.01) as stub:
        mv = registry.register_remote_model(wb, "teacher", "ollama", stub.url, "teacher")
        job = start_selfinstruct(wb, mv.id, "si-killed", target=12, max_rounds=30, concurrency=1)
        answers = Path(wb.jobs.get(job.id).cwd) / "teacher_answers.jsonl"
        progress = answers.with_name("progress.jsonl")
        deadline = time.monotonic() + 60
        while not (progress.is_file() and progress.read_text().strip()):  # a round is done
            assert time.monotonic() < deadline, "the teacher was never asked"
            time.sleep(0.05)
        os.kill(wb.jobs.get(job.id).pid, signal.SIGKILL)
        killed = wb.jobs.wait(job.id, 60)
        assert killed.status == "interrupted" and "signal 9" in killed.error
        view = selfinstruct_view(wb, job.id)
        assert view["counts"]["kept"] >= 1 and view["sample"] and not get_dataset_named(wb, "si-killed")
        before = len(answers.read_text().splitlines())
    # the teacher has gone: the resumed run fails with a plain reason and keeps its rows
    down = wb.jobs.wait(resume_selfinstruct(wb, job.id).id, 120)
    assert down.status == "failed" and "the teacher failed" in down.error and "resume" in down.error
    assert len(answers.read_text().splitlines()) == before and not get_dataset_named(wb, "si-killed")
    with OllamaStub(models=["teacher"], brain=teacher_brain) as back:
        _point(wb, mv.id, back.url)  # the user fixed the teacher's address, then resumed
        done = wb.jobs.wait(resume_selfinstruct(wb, job.id).id, 120)
    assert done.status == "succeeded", done.error
    assert get_dataset(wb, done.result["dataset_id"]).num_rows >= 12
    assert done.result["cached_answers"] >= before


def get_dataset_named(wb, name: str):
    from sqlmodel import select

    from app.core.tables import Dataset

    with wb.session() as s:
        return s.exec(select(Dataset).where(Dataset.name == name)).first()


def _point(wb, model_id: int, url: str) -> None:
    """Move a remote model to a new endpoint (the stand-in restarted on another port)."""
    from app.core.tables import ModelVersion

    with wb.write_lock, wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        mv.meta = {**mv.meta, "endpoint": url}
        s.add(mv)
        s.commit()
