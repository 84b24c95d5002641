"""The generic job runner's lifecycle with a fake trainer (tests/fake_trainer.py): queueing
by resource, cancel, kill -9, restart, resume, and submit/cancel/delete races. Each
job is a real subprocess; none loads a model, so the whole file takes seconds."""

import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import select

from app.core.errors import Conflict, NotFound
from app.core.jobs import JobKind, JobSpec, python_command
from app.core.progress_log import TRAINER_LOG
from app.core.tables import Job, ModelVersion, Run
from app.models import registry
from app.train import training
from tests.conftest import make_workbench

FAKE = Path(__file__).resolve().parent / "fake_trainer.py"


@pytest.fixture
def base(wb, tmp_path):
    with wb.session() as s:
        mv = ModelVersion(name="base", kind="base", base_path=str(tmp_path / "base"))
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


def fake_run(wb, base, name, steps=3, delay=0.05, mode="ok", resources=frozenset({"cpu"})) -> Run:
    """A training run whose job runs the fake trainer instead of llamafactory-cli."""
    folder = wb.settings.runs_dir / name
    folder.mkdir(parents=True)
    out = folder / "output"
    spec = JobSpec(command=[sys.executable, str(FAKE), str(out), str(steps), str(delay), mode],
                   cwd=folder, log_path=folder / "train.log", progress_path=out / TRAINER_LOG,
                   resources=resources, title=name)
    run = Run(name=name, stage="sft", model_id=base.id, config={"finetuning_type": "lora"},
              output_dir=str(out))
    return training.queue_run(wb, run, spec)


def started(run: Run) -> bool:
    return (Path(run.output_dir).parent / "started").exists()


def wait_until(check, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise TimeoutError(f"no {what} within {timeout} s")


def test_a_finished_run_registers_its_model_with_progress_and_result(wb, base):
    run = training.wait_run(wb, fake_run(wb, base, "ok", steps=4).id, 30)
    assert run.status == "succeeded", run.error
    assert run.job.returncode == 0 and run.job.progress["steps"] == 4
    assert run.metrics["final_loss"] == 0.25 and run.metrics["train_loss"] == 0.25
    mv = registry.get_model(wb, run.output_model_id)
    assert (mv.parent_id, mv.run_id, mv.kind) == (base.id, run.id, "adapter")
    view = training.run_view(wb, run.id)
    assert view["percent"] == 100.0 and [p["value"] for p in view["points"]][-1] == 0.25
    assert "ran 4 of 4 steps" in view["log"]


def test_a_failing_process_is_failed_with_its_log_and_registers_nothing(wb, base):
    run = training.wait_run(wb, fake_run(wb, base, "bad", mode="fail").id, 30)
    assert run.status == "failed" and run.returncode == 3
    assert "exited with code 3" in run.error and "the fake trainer failed" in run.error
    assert run.output_model_id is None and len(registry.list_models(wb)) == 1


def test_jobs_sharing_a_resource_run_one_after_the_other(wb, base):
    first = fake_run(wb, base, "first", steps=5, delay=0.1)
    second = fake_run(wb, base, "second", steps=1)
    # Different GPUs (and jobs holding nothing) do not wait for the CPU job.
    gpu0 = fake_run(wb, base, "gpu0", steps=5, delay=0.1, resources=frozenset({"gpu:0"}))
    gpu01 = fake_run(wb, base, "gpu01", steps=1, resources=frozenset({"gpu:0", "gpu:1"}))
    assert training.get_run(wb, second.id).status == "queued"
    runs = {r.name: training.wait_run(wb, r.id, 60) for r in (first, second, gpu0, gpu01)}
    assert all(r.status == "succeeded" for r in runs.values())
    assert runs["second"].job.started_at >= runs["first"].job.finished_at
    assert runs["gpu01"].job.started_at >= runs["gpu0"].job.finished_at
    assert runs["gpu0"].job.started_at < runs["first"].job.finished_at  # overlapped the CPU job
    assert runs["gpu0"].gpus == "0" and runs["gpu01"].gpus == "0,1"


def test_cancel_a_queued_job_never_starts_it(wb, base):
    blocker = fake_run(wb, base, "blocker", steps=20, delay=0.05)
    waiting = fake_run(wb, base, "waiting", steps=1)
    cancelled = training.cancel_run(wb, waiting.id)
    assert cancelled.status == "cancelled"
    assert training.wait_run(wb, blocker.id, 60).status == "succeeded"
    time.sleep(0.3)
    assert training.get_run(wb, waiting.id).status == "cancelled" and not started(waiting)
    with pytest.raises(Conflict, match="cancelled, not running"):
        training.cancel_run(wb, waiting.id)


def test_cancel_a_running_job_stops_it_cleanly_and_resume_finishes_it(wb, base):
    run = fake_run(wb, base, "long", steps=200, delay=0.02)
    wait_until(lambda: training.run_view(wb, run.id)["step"] >= 3, what="step 3")
    training.cancel_run(wb, run.id)
    run = training.wait_run(wb, run.id, 30)
    assert run.status == "cancelled" and run.output_model_id is None
    assert (Path(run.output_dir) / "adapter_config.json").is_file()  # saved on the way out
    assert 3 <= run.metrics["steps"] < 200
    wb.jobs.requeue(run.job_id)
    run = training.wait_run(wb, run.id, 60)
    assert run.status == "succeeded" and run.output_model_id is not None


def test_kill_minus_nine_interrupts_the_job(wb, base):
    run = fake_run(wb, base, "victim", steps=500, delay=0.02)
    pid = wait_until(lambda: training.get_run(wb, run.id).job.pid, what="a pid")
    wait_until(lambda: training.run_view(wb, run.id)["step"] >= 1, what="a first step")
    os.kill(pid, signal.SIGKILL)
    run = training.wait_run(wb, run.id, 30)
    assert run.status == "interrupted" and "signal 9" in run.error and run.output_model_id is None


def test_restart_settles_jobs_that_ended_while_the_app_was_down(tmp_path):
    home = tmp_path / "home"
    wb = make_workbench(home)
    with wb.session() as s:
        base = ModelVersion(name="base", kind="base", base_path=str(tmp_path / "base"))
        s.add(base)
        s.commit()
        s.refresh(base)
    done = fake_run(wb, base, "done-while-down", steps=40, delay=0.02, resources=frozenset())
    dead = fake_run(wb, base, "died-while-down", steps=1000, delay=0.02, resources=frozenset())
    alive = fake_run(wb, base, "still-alive", steps=150, delay=0.02, resources=frozenset())
    failing = fake_run(wb, base, "failed-while-down", steps=30, delay=0.02, mode="fail",
                       resources=frozenset())
    pids = {r.name: wait_until(lambda r=r: training.get_run(wb, r.id).job.pid, what="pid")
            for r in (done, dead, alive, failing)}
    wb.close()  # the app goes away; the trainers keep going
    os.kill(pids["died-while-down"], signal.SIGKILL)
    wait_until(lambda: (Path(done.output_dir) / "all_results.json").is_file(), what="the finish")
    log = Path(failing.output_dir).parent / "train.log"
    wait_until(lambda: log.is_file() and "fake trainer failed" in log.read_text(), what="the failure")
    time.sleep(0.2)
    wb2 = make_workbench(home)  # start-up reconciles
    try:
        finished = training.get_run(wb2, done.id)
        assert finished.status == "succeeded" and finished.output_model_id is not None
        assert finished.metrics["steps"] == 40
        died = training.get_run(wb2, dead.id)
        assert died.status == "interrupted" and "not running" in died.error
        failed = training.get_run(wb2, failing.id)
        assert failed.status == "failed" and "failed while Forgeloop was not running" in failed.error
        assert "RuntimeError: the fake trainer failed" in failed.error
        assert training.get_run(wb2, alive.id).status == "running"  # re-attached
        reattached = training.wait_run(wb2, alive.id, 60)
        assert reattached.status == "succeeded" and reattached.output_model_id is not None
    finally:
        wb2.close()


def test_submit_cancel_delete_races_never_run_a_withdrawn_job(wb, base):
    rng = random.Random(7)
    withdrawn = []
    for i in range(20):
        run = fake_run(wb, base, f"race-{i}", steps=2, delay=0.01, resources=frozenset())
        time.sleep(rng.uniform(0, 0.022))
        try:
            status = training.cancel_run(wb, run.id).status
        except Conflict:  # it ran already
            status = "finished"
        if status != "cancelled":  # it had started: it may run; let it end
            training.wait_run(wb, run.id, 30)
            continue
        time.sleep(rng.uniform(0, 0.022))
        training.delete_run(wb, run.id)
        withdrawn.append(run)
    time.sleep(1.5)  # give a wrongly launched job time to leave its marker
    assert withdrawn, "every job started before it could be cancelled; the race was not exercised"
    assert [r.name for r in withdrawn if started(r)] == []
    with wb.session() as s:
        assert s.exec(select(Run).where(Run.name.in_([r.name for r in withdrawn]))).all() == []
        assert not s.exec(select(Job).where(Job.status.in_(("running", "starting")))).all()
    assert wb.jobs.alive()
    after = training.wait_run(wb, fake_run(wb, base, "after-races", steps=1).id, 30)
    assert after.status == "succeeded"


def test_errors_while_starting_or_finishing_are_recorded_and_the_loop_goes_on(wb, tmp_path):
    calls = []

    def broken_finish(wb_, s, job, outcome):
        calls.append(job.id)
        raise RuntimeError("finish exploded")

    wb.jobs.register(JobKind("broken", finish=broken_finish))
    spec = JobSpec(command=python_command("json.tool", "--help"), cwd=tmp_path, log_path=tmp_path / "a.log")
    job = wb.jobs.wait(wb.jobs.submit("broken", spec).id, 30)
    assert job.status == "failed" and "finish exploded" in job.error and calls == [job.id]
    missing = JobSpec(command=[str(tmp_path / "no-such-program")], cwd=tmp_path, log_path=tmp_path / "b.log")
    job = wb.jobs.wait(wb.jobs.submit("broken", missing).id, 30)
    assert job.status == "failed" and job.error.startswith("could not start: FileNotFoundError")
    with pytest.raises(NotFound, match="no job kind"):
        wb.jobs.submit("unknown-kind", spec)
    assert wb.jobs.alive()
    ok = wb.jobs.wait(wb.jobs.submit("broken", spec).id, 30)  # a later job still runs
    assert ok.status == "failed" and calls[-1] == ok.id


def test_wait_and_progress_follow_any_job_kind(wb, tmp_path):
    progress = tmp_path / "p.jsonl"
    code = ("import os, time; from app.core.progress_log import report; t = time.monotonic()\n"
            "for i in range(1, 4): report(os.environ['FORGELOOP_PROGRESS'], i, 3, t, loss=1 / i)\n"
            "open(os.environ['FORGELOOP_RESULT'], 'w').write('{\"answer\": 42}')")
    wb.jobs.register(JobKind("py"))
    spec = JobSpec(command=[sys.executable, "-c", code], cwd=tmp_path, log_path=tmp_path / "py.log",
                   progress_path=progress, result_path=tmp_path / "r.json", title="py job")
    job = wb.jobs.wait(wb.jobs.submit("py", spec).id, 30)
    assert job.status == "succeeded" and job.result == {"answer": 42}
    view = wb.jobs.view(job)
    assert view["percent"] == 100.0 and view["step"] == 3
    assert job.progress["final_loss"] == pytest.approx(1 / 3)


def test_the_scheduler_thread_survives_a_flood_of_threads_cancelling(wb, base):
    runs = [fake_run(wb, base, f"flood-{i}", steps=1, delay=0.0) for i in range(8)]
    errors = []

    def cancel(run):
        try:
            training.cancel_run(wb, run.id)
        except Conflict:
            pass
        except Exception as e:  # noqa: BLE001 - any other error is the failure
            errors.append(e)

    threads = [threading.Thread(target=cancel, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for r in runs:
        assert training.wait_run(wb, r.id, 30).status in ("cancelled", "succeeded")
    assert wb.jobs.alive()


def checkpoint(run: Run, step: int, last: int) -> None:
    ckpt = Path(run.output_dir) / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": last}))


def test_resume_forgets_the_steps_after_the_checkpoint_and_refuses_a_finished_one(wb, base):
    run = fake_run(wb, base, "stopped", steps=200, delay=0.02)
    wait_until(lambda: training.run_view(wb, run.id)["step"] >= 6, what="step 6")
    run = training.wait_run(wb, training.cancel_run(wb, run.id).id, 30)
    checkpoint(run, 4, 200)
    blocker = fake_run(wb, base, "blocker", steps=20, delay=0.05)  # holds the CPU: the resume waits
    training.resume_run(wb, run.id)
    steps = [json.loads(x)["current_steps"] for x in
             (Path(run.output_dir) / TRAINER_LOG).read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert training.run_view(wb, run.id)["step"] == 4
    assert training.wait_run(wb, blocker.id, 60).status == "succeeded"
    training.wait_run(wb, run.id, 60)
    done = fake_run(wb, base, "complete", steps=200, delay=0.02)
    wait_until(lambda: training.run_view(wb, done.id)["step"] >= 2, what="step 2")
    done = training.wait_run(wb, training.cancel_run(wb, done.id).id, 30)
    checkpoint(done, 200, 200)
    with pytest.raises(Conflict, match="already reached its last step"):
        training.resume_run(wb, done.id)
    assert training.get_run(wb, done.id).metrics == done.metrics


def test_jobs_rest_routes_list_follow_and_cancel_any_job(tmp_path):
    from fastapi.testclient import TestClient

    import launch
    from app.core.settings import Settings

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        with wb.session() as s:
            base = ModelVersion(name="base", kind="base", base_path=str(tmp_path / "base"))
            s.add(base)
            s.commit()
            s.refresh(base)
        run = fake_run(wb, base, "via-rest", steps=300, delay=0.02)
        with TestClient(server) as client:
            wait_until(lambda: client.get(f"/api/jobs/{run.job_id}").json()["step"] >= 2, what="step 2")
            listed = client.get("/api/jobs", params={"kind": "train"}).json()
            assert [(j["id"], j["kind"], j["title"]) for j in listed] == [(run.job_id, "train", "via-rest")]
            assert client.get("/api/jobs", params={"kind": "starter"}).json() == []
            assert client.post(f"/api/jobs/{run.job_id}/cancel").json()["status"] == "running"
            job = wb.jobs.wait(run.job_id, 30)
            detail = client.get(f"/api/jobs/{job.id}").json()
            assert detail["status"] == "cancelled" and detail["resources"] == ["cpu"]
            assert "ran" in detail["log"] and detail["percent"] < 100
            again = client.post(f"/api/jobs/{job.id}/cancel")
            assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    finally:
        wb.close()



def test_a_secret_reaches_the_process_but_not_the_job_row(wb, tmp_path):
    """JobSpec.secret_env travels in memory to the process's environment, never into the DB."""
    wb.jobs.register(JobKind("py"))
    secret = "s3cret-" + os.urandom(8).hex()
    # The process gets the secret reversed on its command line, and checks its environment.
    check = "import os, sys; sys.exit(0 if os.environ.get('FL_SECRET') == sys.argv[1][::-1] else 3)"
    command = [sys.executable, "-c", check, secret[::-1]]
    spec = JobSpec(command=command, cwd=tmp_path, log_path=tmp_path / "job.log", env={"PLAIN": "1"},
                   secret_env={"FL_SECRET": secret})
    assert secret not in repr(spec)
    job = wb.jobs.wait(wb.jobs.submit("py", spec).id, 60)
    assert job.status == "succeeded", job.error  # the process saw it
    assert job.env == {"PLAIN": "1"}
    assert not [p for p in wb.settings.home.rglob("forgeloop.db*") if secret.encode() in p.read_bytes()]
    without = JobSpec(command=command, cwd=tmp_path, log_path=tmp_path / "job2.log")
    assert wb.jobs.wait(wb.jobs.submit("py", without).id, 60).status == "failed"  # the check can fail
    with wb.session() as s, pytest.raises(ValueError, match="committed by submit itself"):
        wb.jobs.submit("py", spec, s)  # a caller's rollback could hand it to a later job's id
