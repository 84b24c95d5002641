"""Click through the four tabs in headless Chromium, as a person would."""

import os
import re
import shutil
from pathlib import Path

import pytest

from app.core.settings import Settings
from app.models import registry
from tests.conftest import ROOT, ServerThread, home_with_served, make_workbench

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


def _need_browser():
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed, and CI=true requires the browser tests to run")
    pytest.skip("chromium is not installed (run `make browser` as root to install it)")


@pytest.fixture
def page():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


@pytest.fixture
def server(tmp_path, starter_dir):
    import launch

    home = tmp_path / "home"
    wb = make_workbench(home)
    registry.register_base_model(wb, "starter", str(starter_dir))
    wb.close()
    app, _, wb = launch.build_server(Settings(home=home, job_env={"HF_HUB_OFFLINE": "1"}))
    with ServerThread(app) as srv:
        yield srv
    wb.close()


def test_click_through_the_four_tabs(page, server, tmp_path):
    from playwright.sync_api import expect

    page.goto(server.url)
    expect(page.get_by_role("heading", name="Forgeloop")).to_be_visible()

    page.get_by_role("tab", name="Data").click()
    page.get_by_role("button", name="Register the sample SFT dataset").click()
    expect(page.get_by_text("Registered sample-sft")).to_be_visible()
    expect(page.get_by_text("sample-sft").last).to_be_visible()

    page.get_by_role("tab", name="Train").click()
    expect(page.get_by_role("button", name="Start training")).to_be_visible()
    expect(page.get_by_text("Equivalent command")).to_be_visible()

    page.get_by_role("tab", name="Arena").click()
    expect(page.get_by_role("button", name="A is better")).to_be_visible()
    expect(page.get_by_role("button", name="Both are bad")).to_be_visible()

    page.get_by_role("tab", name="Registry").click()
    expect(page.get_by_role("button", name="Register base model")).to_be_visible()
    expect(page.locator("table").get_by_text("starter", exact=True).first).to_be_visible()
    page.get_by_label("Show version").click()
    page.get_by_role("option", name="starter (base)").click()
    expect(page.get_by_role("heading", name="starter (#1)")).to_be_visible()
    expect(page.get_by_text("size on disk")).to_be_visible()

    shot = Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "registry.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def sample_data_in_the_train_form(page, url: str) -> None:
    """Register the sample SFT data in the Data tab, then pick it and the starter in the Train
    form (data registered in one tab shows up in the other's picker)."""
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_role("tab", name="Data").click()
    page.get_by_role("button", name="Register the sample SFT dataset").click()
    expect(page.get_by_text("Registered sample-sft")).to_be_visible()
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Start from model").click()
    page.get_by_role("option", name="starter (base)").click()
    page.get_by_label("Datasets").click()
    page.get_by_role("option", name="sample-sft · sft · 195 rows").click()


@pytest.mark.slow
def test_train_from_the_browser(page, server, tmp_path):
    from playwright.sync_api import expect

    sample_data_in_the_train_form(page, server.url)
    page.get_by_label("Run name (optional)").fill("browser-sft")
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Learning rate").fill("0.001")
    page.get_by_label("Batch size per device").fill("8")
    page.get_by_role("button", name="Start training").click()
    banner = page.locator("#train-status")
    expect(banner).to_contain_text(re.compile("Run browser-sft submitted|browser-sft is (queued|starting|"
                                              "training)"))

    # The live view: a progress bar that reaches the end and a drawn loss curve; the banner
    # and the run picker follow the run's status, never left saying "queued" or "running".
    done = page.locator(".fl-progress[data-status='succeeded']")
    expect(done).to_be_visible(timeout=180_000)
    expect(done).to_contain_text("100%")
    expect(banner).to_contain_text("browser-sft finished: its model", timeout=10_000)
    expect(page.get_by_label("Watch run")).to_have_value(re.compile(r"browser-sft \(succeeded\)"))
    plot = page.locator("#run-curves img").first
    expect(plot).to_be_visible()
    box = plot.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    expect(page.get_by_text("llamafactory-cli train").first).to_be_visible()
    shot = Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "train.png"
    page.screenshot(path=str(shot), full_page=True)

    page.get_by_role("tab", name="Registry").click()
    registry_table = page.get_by_role("tabpanel").locator("table")
    expect(registry_table.get_by_text("browser-sft", exact=True).first).to_be_visible()


@pytest.fixture
def empty_server(tmp_path):
    import launch

    app, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    with ServerThread(app) as srv:
        yield srv, wb
    wb.close()


def test_a_new_user_builds_the_starter_and_follows_the_job(page, empty_server, tmp_path):
    from playwright.sync_api import expect

    srv, wb = empty_server
    page.goto(srv.url)
    # A first visit opens on "Start here" (no tab to find first).
    expect(page.locator("#start-here")).to_contain_text("Forgeloop turns votes into better models")
    page.get_by_role("button", name="Create starter model").click()
    expect(page.locator(".fl-progress").first).to_be_visible(timeout=60_000)  # a live bar while it builds
    expect(page.get_by_text("Created starter-tiny")).to_be_visible(timeout=300_000)
    expect(page.locator("table").get_by_text("starter-tiny", exact=True).first).to_be_visible()
    (job,) = wb.jobs.list()
    assert job.kind == "starter" and job.status == "succeeded"
    # The next step is offered: one click queues the starter's fine-tune on the sample data.
    page.locator("#starter-sft").click()
    expect(page.get_by_text("Run starter-tiny-sft submitted")).to_be_visible()
    from app.train import quickstart, training

    (run,) = training.list_runs(wb)
    assert run.recipe == quickstart.STARTER_RECIPE
    assert run.config["learning_rate"] == quickstart.STARTER_SFT["learning_rate"]
    training.cancel_run(wb, run.id)  # not trained here: tests/test_training_runs.py trains

    # The same job in the panel every job kind shares.
    page.get_by_text("Background jobs").click()
    page.get_by_label("Job", exact=True).click()
    page.get_by_role("option", name=f"#{job.id} starter: build starter-tiny (succeeded)").click()
    panel = page.locator(".fl-progress[data-status='succeeded']").last
    expect(panel).to_contain_text("build starter-tiny")
    expect(panel).to_contain_text("100%")
    shot = Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "jobs.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.fixture
def arena_server(tmp_path, stub):
    import launch

    home = tmp_path / "home"
    home_with_served(home, stub)
    stub.chunk_delay = 0.15  # slow enough to watch both answers stream in
    app, _, wb = launch.build_server(Settings(home=home))
    with ServerThread(app) as srv:
        yield srv, wb
    wb.close()


def test_arena_battle_in_the_browser(page, arena_server, tmp_path):
    from playwright.sync_api import expect

    srv, wb = arena_server
    page.goto(srv.url)
    page.get_by_role("tab", name="Arena").click()
    prompt = "tell me something about the sea and the stars"
    page.locator("#arena-prompt textarea").fill(prompt)
    page.locator("#arena-send").click()
    chat_a, chat_b = page.locator("#chat-a"), page.locator("#chat-b")
    vote_a = page.locator("#vote-a")
    # Mid-stream: both sides have started, voting is not yet possible.
    expect(chat_a).to_contain_text("answer", timeout=20_000)
    expect(chat_b).to_contain_text("answer")
    expect(vote_a).to_be_disabled()
    # Both finish (the last word of the reversed prompt), then voting opens.
    expect(chat_a).to_contain_text("tell", timeout=30_000)
    expect(chat_b).to_contain_text("tell", timeout=30_000)
    expect(vote_a).to_be_enabled()
    page.keyboard.press("1")  # shortcut for "A is better"
    status = page.get_by_text("Vote saved")
    expect(status).to_be_visible()
    expect(page.get_by_text("A was")).to_contain_text("alpha")
    expect(page.get_by_text("A was")).to_contain_text("beta")
    expect(vote_a).to_be_disabled()
    # The next turn builds on A's answer, and both panels now show it; B's own answer is
    # folded above it. No panel can be emptied before a vote.
    from app.arena import battles

    turn = battles.turns(wb, 1)[0]
    assert turn.answer_a != turn.answer_b
    expect(chat_b).to_contain_text(turn.answer_a)
    expect(chat_b).to_contain_text("This side's answer (not kept)")
    expect(chat_a).not_to_contain_text("not kept")
    expect(chat_a.get_by_label("Clear")).to_have_count(1)  # Gradio's trash button is there, hidden
    expect(chat_a.get_by_label("Clear")).to_be_hidden()
    expect(page.locator("#arena-tally")).to_contain_text("1 votes so far")  # counted without a click
    page.screenshot(path=str(Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "arena.png"),
                    full_page=True)

    page.get_by_role("tab", name="Leaderboard").click()  # drawn on open, with the vote just cast
    board = page.get_by_role("tabpanel").filter(has_text="Bradley").last
    expect(board).to_contain_text("alpha")
    expect(board).to_contain_text("beta")
    expect(page.get_by_text("1 valid votes")).to_be_visible()

    # History: the battle and its vote are listed; the vote is changed.
    page.get_by_role("tab", name="History").click()
    page.locator("#history-search").click()
    expect(page.locator("#history-table")).to_contain_text("turn 1: a by")
    page.locator("#history-battle input").fill("1")
    page.locator("#history-open").click()
    detail = page.locator("#history-detail")
    expect(detail).to_contain_text("Battle #1")
    page.get_by_label("b", exact=True).check()
    page.locator("#history-change").click()
    expect(detail).to_contain_text("vote b by")


@pytest.fixture
def duel_server(tmp_path, starter_dir, sft_adapter_dir):
    import launch

    home = tmp_path / "home"
    wb = make_workbench(home)
    base = registry.register_base_model(wb, "starter", str(starter_dir))
    registry.register_adapter(wb, "tuned", base.id, str(sft_adapter_dir))
    wb.close()
    app, _, wb = launch.build_server(Settings(home=home))
    with ServerThread(app) as srv:
        yield srv
    wb.close()


@pytest.mark.slow
def test_named_battle_between_base_and_finetune(page, duel_server):
    from playwright.sync_api import expect

    page.goto(duel_server.url)
    page.get_by_role("tab", name="Arena").click()
    page.get_by_label("Named", exact=True).check()
    page.get_by_label("Model A", exact=True).click()
    page.get_by_role("option", name="starter (base)").click()
    page.get_by_label("Model B", exact=True).click()
    page.get_by_role("option", name="tuned (adapter)").last.click()
    page.locator("#arena-prompt textarea").fill("What does a cat say?")
    page.locator("#arena-send").click()
    expect(page.locator("#vote-b")).to_be_enabled(timeout=120_000)
    for chat in ("#chat-a", "#chat-b"):
        expect(page.locator(chat)).to_contain_text("What does a cat say?")
    # A named battle says who is who from the first answer.
    expect(page.locator("#chat-a")).to_contain_text("A · starter")
    expect(page.locator("#chat-b")).to_contain_text("B · tuned")
    page.locator("#vote-b").click()
    reveal = page.get_by_text("A was")
    expect(reveal).to_contain_text("starter")
    expect(reveal).to_contain_text("tuned")
    # Both sides answered from worker processes, listed under the battle; unload one.
    page.locator("#arena-workers-panel").get_by_text("Model workers (local models loaded for chat)").click()
    table = page.locator("#arena-workers")  # filled, with the picker, when the panel opens
    expect(table).to_contain_text("tuned")
    expect(table).to_contain_text("starter")
    expect(table).to_contain_text("ready")
    page.locator("#arena-worker-model input").click()
    page.get_by_role("option", name="tuned", exact=True).click()
    page.locator("#arena-worker-unload").click()
    expect(page.locator("#arena-worker-note")).to_contain_text("Unloaded")
    expect(table).not_to_contain_text("tuned")
    expect(table).to_contain_text("starter")


def refused_responses(page) -> list[str]:
    """Every response of 400 or more the page gets from now on (filled in as it runs)."""
    refused: list[str] = []
    page.on("response", lambda r: refused.append(f"{r.status} {r.request.method} {r.url}")
            if r.status >= 400 else None)
    return refused


def log_in_through_the_page(page, url: str, user: str, password: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_label("username")).to_be_hidden()


@pytest.fixture
def voter_server(tmp_path, stub):
    """The guarded voter server, as --share serves it."""
    import launch
    from app.arena import voters

    home = tmp_path / "home"
    home_with_served(home, stub)
    wb = make_workbench(home)
    voters.create_voter(wb, "vera", "vera-pass")
    app, _ = launch.build_voter_server(wb)
    with ServerThread(app) as srv:
        yield srv, wb
    wb.close()


def test_a_voter_battles_and_votes_through_the_guarded_voter_app(page, voter_server):
    """The voter server's guards (login gate, event checks, closed routes) leave the page whole."""
    from playwright.sync_api import expect

    srv, _ = voter_server
    log_in_through_the_page(page, srv.url, "vera", "vera-pass")
    refused = refused_responses(page)
    page.locator("#arena-prompt textarea").fill("name a colour of the sky")
    page.locator("#arena-prompt textarea").press("Enter")  # the Enter key: an event the API hides
    vote_a = page.locator("#vote-a")
    expect(vote_a).to_be_enabled(timeout=30_000)
    expect(page.locator("#chat-a")).to_contain_text("name")
    vote_a.click()
    expect(page.get_by_text("Vote saved")).to_be_visible()
    page.get_by_role("tab", name="Leaderboard").click()
    page.get_by_role("button", name="Refresh leaderboard").click()
    expect(page.get_by_text("1 valid votes")).to_be_visible()
    page.reload()  # a new page load with the login cookie: no login form, no refusals
    expect(page.locator("#arena-prompt textarea")).to_be_visible()
    assert refused == []


def test_the_workbench_login_page_with_auth(page, tmp_path):
    from playwright.sync_api import expect

    import launch

    app, _, wb = launch.build_server(Settings(home=tmp_path / "home", auth=(("ann", "admin-pw"),)))
    try:
        with ServerThread(app) as srv:
            log_in_through_the_page(page, srv.url, "ann", "admin-pw")
            refused = refused_responses(page)
            expect(page.get_by_role("heading", name="Forgeloop")).to_be_visible()
            page.get_by_role("tab", name="Registry").click()
            expect(page.get_by_role("button", name="Register base model")).to_be_visible()
            page.reload()
            expect(page.get_by_role("heading", name="Forgeloop")).to_be_visible()
            assert refused == []
    finally:
        wb.close()


@pytest.fixture
def deploy_server(tmp_path, starter_dir):
    """The workbench deploying to the Ollama stand-in, whose created models answer through
    llama.cpp; the registry holds the starter and a second version of its family."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is built by `make test` (make llama)")
    import launch
    from app.core.tables import ModelVersion
    from tests.ollama_llama import LlamaRunner
    from tests.ollama_stub import OllamaStub

    home = tmp_path / "home"
    wb = make_workbench(home)
    base = registry.register_base_model(wb, "starter", str(starter_dir))
    v2 = registry.register_base_model(wb, "starter-v2", str(starter_dir))
    with wb.session() as s:  # a later version of the starter's family, as a run would make
        live = s.get(ModelVersion, v2.id)
        live.parent_id = base.id
        s.add(live)
        s.commit()
    wb.close()
    with OllamaStub(models=["someone-else:1b"], runner=LlamaRunner()) as stub:
        app, _, wb = launch.build_server(Settings(home=home, ollama_host=stub.url,
                                                  job_env={"HF_HUB_OFFLINE": "1"}))
        try:
            with ServerThread(app) as srv:
                yield srv, stub
        finally:
            wb.close()


def test_export_deploy_list_and_roll_back_in_the_browser(page, deploy_server, tmp_path):
    import ollama
    from playwright.sync_api import expect

    srv, stub = deploy_server
    client = ollama.Client(host=stub.url)
    page.goto(srv.url)
    page.get_by_role("tab", name="Registry").click()
    section = page.locator("#deploy-section")
    rows = section.locator("table tbody tr").filter(has=page.locator("td[data-col]"))  # data rows only

    def row(name: str):  # the row whose "ollama name" is ``name``
        return rows.filter(has=page.locator("td[data-col='1']").get_by_text(name, exact=True))

    def export_and_deploy(model: str) -> None:
        page.get_by_label("Model", exact=True).click()
        page.get_by_role("option", name=f"{model} (base)", exact=True).click()
        page.get_by_role("button", name="Convert to GGUF").click()
        expect(page.get_by_text(f"{model}.f32.gguf")).to_be_visible(timeout=60_000)  # "Wrote a f32 GGUF …"
        section.get_by_role("button", name="Deploy", exact=True).click()
        expect(page.get_by_text(f"Deployed forgeloop/starter:{model}.")).to_be_visible(timeout=60_000)
        bar = section.locator(".fl-progress[data-status='succeeded']")
        expect(bar).to_contain_text(f"deploy forgeloop/starter:{model} to Ollama")
        expect(bar).to_contain_text("100%")

    page.get_by_text("Export the chosen model").click()
    page.get_by_label("GGUF type").click()
    page.get_by_role("option", name="f32", exact=True).click()
    page.get_by_text("Deploy the chosen model to Ollama").click()
    unknown = section.get_by_text("Ollama also has models Forgeloop did not deploy")
    expect(unknown).to_contain_text("someone-else:1b")  # opening the section lists what Ollama has
    export_and_deploy("starter")
    expect(row("forgeloop/starter:starter")).to_contain_text("yes")
    latest = row("forgeloop/starter:latest")
    expect(latest).to_contain_text("forgeloop/starter:starter")  # points to
    expect(latest).to_contain_text("yes")
    expect(unknown).to_contain_text("someone-else:1b")
    first_id = row("forgeloop/starter:starter").locator("td").first.inner_text().strip()

    # A second version of the family takes :latest; rolling back points it at the first again.
    export_and_deploy("starter-v2")
    expect(rows).to_have_count(3)
    expect(latest).to_contain_text("forgeloop/starter:starter-v2")
    digests = {m.model: m.digest for m in client.list().models}
    assert digests["forgeloop/starter:latest"] == digests["forgeloop/starter:starter-v2"]
    assert digests["forgeloop/starter:starter"] != digests["forgeloop/starter:starter-v2"]
    section.get_by_label("Deployment id").fill(first_id)
    section.get_by_role("button", name="Point :latest here (roll back)").click()
    expect(page.get_by_text("forgeloop/starter:latest now serves forgeloop/starter:starter")).to_be_visible()
    expect(latest.locator("td[data-col='3']")).to_have_text("forgeloop/starter:starter")
    after = {m.model: m.digest for m in client.list().models}
    assert after["forgeloop/starter:latest"] == digests["forgeloop/starter:starter"]
    # The stable tag answers, through llama.cpp on the first version's GGUF.
    answer = client.chat("forgeloop/starter:latest", messages=[{"role": "user", "content": "Hello!"}],
                         options={"temperature": 0, "num_predict": 4})
    assert answer.message.content.strip()

    # Into the arena as a version of its own: the models table and the picker know it at once.
    section.get_by_role("button", name="Add to arena").click()
    expect(page.get_by_text("forgeloop-starter-starter battles in the arena")).to_be_visible()
    models = page.get_by_role("tabpanel").locator("table").first
    expect(models.get_by_text("forgeloop-starter-starter", exact=True)).to_be_visible()
    page.get_by_label("Model", exact=True).click()
    expect(page.get_by_role("option", name="forgeloop-starter-starter (ollama)")).to_be_visible()
    page.keyboard.press("Escape")

    shot = Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "registry-deploy.png"
    section.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


@pytest.fixture
def data_server(tmp_path):
    """An Ollama stand-in teacher that writes tasks from its prompt, and three pairs already
    judged by a deterministic judge, waiting for people to label them."""
    import launch
    from app.arena import judge
    from tests.conftest import neutral_brain, register_served
    from tests.ollama_stub import OllamaStub
    from tests.test_judge import longer_wins
    from tests.test_self_instruct_job import teacher_brain

    home = tmp_path / "home"
    with OllamaStub(models=["teacher", "alpha:1b", "beta:1b", "gamma:1b"], brain=neutral_brain) as stub:
        stub.models["teacher"].brain = teacher_brain
        stub.models["beta:1b"].brain = lambda m, p: "a longer and more detailed answer about " + p
        stub.models["gamma:1b"].brain = longer_wins
        wb = make_workbench(home)
        registry.register_remote_model(wb, "teacher", "ollama", stub.url, "teacher")
        alpha, beta, gamma = register_served(wb, stub)
        prompts = ["name a river", "how is bread made", "why do owls hoot"]
        assert len(judge.judge_prompts(wb, prompts, alpha.id, beta.id, gamma.id).battle_ids) == 3
        wb.close()
        app, _, wb = launch.build_server(Settings(home=home, job_env={"HF_HUB_OFFLINE": "1"}))
        try:
            with ServerThread(app) as srv:
                yield srv, wb
        finally:
            wb.close()


def test_generate_with_self_instruct_and_label_pairs_in_the_data_tab(page, data_server, tmp_path):
    import re

    from playwright.sync_api import expect

    from app.arena import annotation
    from app.data.datasets import list_datasets

    srv, wb = data_server
    page.goto(srv.url)
    page.get_by_role("tab", name="Data").click()
    page.get_by_text("Generate with Self-Instruct").click()
    section = page.locator("#selfinstruct-section")
    section.get_by_label("Teacher model").click()
    page.get_by_role("option", name="teacher (ollama)").click()
    section.get_by_role("button", name="Test connection").click()
    expect(section.get_by_text(re.compile(r"✓ teacher at http://\S+ answered in"))).to_be_visible()
    section.get_by_label("Dataset name").fill("si-browser")
    section.get_by_label("Rows to keep").fill("12")
    section.get_by_role("button", name="Start Self-Instruct job").click()
    started = section.get_by_text(re.compile(r"Job \d+ started: self-instruct si-browser from teacher"))
    expect(started).to_be_visible()
    job_id = int(re.search(r"Job (\d+)", started.inner_text()).group(1))
    live = page.locator("#selfinstruct-live")  # counts and the newest kept tasks, as they come
    expect(live.locator(".fl-progress[data-status='succeeded']")).to_be_visible(timeout=60_000)
    expect(live.locator(".fl-si-counts")).to_contain_text("kept 12")
    assert live.locator(".fl-si-sample li").count() >= 1

    # Follow it in the Background jobs panel until it succeeds.
    page.get_by_text("Background jobs").click()
    page.get_by_label("Job", exact=True).click()
    page.get_by_role("option", name=re.compile(rf"^#{job_id} selfinstruct: self-instruct si-browser")).click()
    bar = page.locator(".fl-progress").last
    expect(bar).to_contain_text("si-browser")
    expect(page.locator(".fl-progress[data-status='succeeded']").last).to_contain_text("100%",
                                                                                        timeout=60_000)
    assert wb.jobs.get(job_id).status == "succeeded"
    (made,) = [d for d in list_datasets(wb) if d.name == "si-browser"]
    assert made.num_rows >= 12

    # The new dataset is listed once the tab is opened again.
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("tab", name="Data").click()
    expect(page.locator("table").get_by_text("si-browser", exact=True).first).to_be_visible()

    # Label the three judged pairs, blind, one after another.
    labelled = set()
    for label in ("A is better", "B is better", "Tie"):
        page.get_by_role("button", name="Next pair").click()
        expect(page.get_by_text(f"{3 - len(labelled)} pairs waiting.")).to_be_visible()
        pair = int(page.get_by_label("Pair", exact=True).input_value())
        for name in ("A is better", "B is better", "Tie", "Both are bad"):  # a new pair starts unlabelled
            expect(page.get_by_role("radio", name=name, exact=True)).not_to_be_checked()
        if len(labelled) == 2:  # the guide's picture: every section, a pair on screen
            shot = Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "data.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        page.get_by_role("radio", name=label, exact=True).check()
        page.get_by_role("button", name="Save label").click()
        expect(page.get_by_text(f"Saved your label on pair {pair}.")).to_be_visible()
        labelled.add(pair)
    assert len(labelled) == 3
    page.get_by_role("button", name="Next pair").click()
    expect(page.get_by_text("No pair is waiting for a label.")).to_be_visible()
    assert annotation.agreement(wb)["labelled"] == 3


@pytest.fixture
def eval_server(tmp_path):
    """Two stand-in models to evaluate (alpha answers short, beta long) and a judge that
    prefers the longer answer."""
    import launch
    from tests.conftest import neutral_brain, register_served
    from tests.ollama_stub import OllamaStub
    from tests.test_judge import longer_wins

    home = tmp_path / "home"
    with OllamaStub(models=["alpha:1b", "beta:1b", "gamma:1b"], brain=neutral_brain) as stub:
        stub.models["beta:1b"].brain = lambda m, p: "a longer and more detailed answer about " + p
        stub.models["gamma:1b"].brain = longer_wins
        wb = make_workbench(home)
        register_served(wb, stub)
        wb.close()
        app, _, wb = launch.build_server(Settings(home=home, job_env={"HF_HUB_OFFLINE": "1"}))
        try:
            with ServerThread(app) as srv:
                yield srv, wb
        finally:
            wb.close()


@pytest.fixture
def pairs_server(tmp_path):
    """Two pairs sampled without a judge, waiting in the annotation queue."""
    import launch
    from app.arena import judge
    from tests.conftest import neutral_brain, register_served
    from tests.ollama_stub import OllamaStub

    home = tmp_path / "home"
    with OllamaStub(models=["alpha:1b", "beta:1b"], brain=neutral_brain) as stub:
        wb = make_workbench(home)
        alpha, beta = register_served(wb, stub, ("alpha:1b", "beta:1b"))
        assert len(judge.judge_prompts(wb, ["name a lake", "why is ice slippery"], alpha.id, beta.id,
                                       None).battle_ids) == 2
        wb.close()
        app, _, wb = launch.build_server(Settings(home=home))
        try:
            with ServerThread(app) as srv:
                yield srv, wb
        finally:
            wb.close()


def test_run_a_suite_on_two_models_in_the_evaluate_tab(page, eval_server, tmp_path):
    from playwright.sync_api import expect

    from app.evals import runs

    srv, wb = eval_server
    page.goto(srv.url)
    page.get_by_role("tab", name="Evaluate").click()
    suite = page.locator("#eval-suite-section")
    suite.get_by_label("Suite name").fill("smoke")
    suite.get_by_label("Prompts (one a line").fill("name a colour\nwhat is rain\nwhy do owls hoot")
    suite.get_by_label("Checks").fill("contains: answer\nmax_length: 40")
    suite.get_by_role("button", name="Save suite").click()
    expect(page.get_by_text("Saved smoke v1: 3 prompts, 2 checks.")).to_be_visible()

    run = page.locator("#eval-run-section")
    for picker, option in (("#eval-suite", "smoke v1 · 3 prompts"), ("#eval-model-a", "alpha (ollama)"),
                           ("#eval-model-b", "beta (ollama)"), ("#eval-judge", "gamma (ollama)")):
        page.locator(picker).get_by_role("listbox").click()
        page.locator(picker).get_by_role("option", name=option).click()
    run.get_by_label("Also judge the second model against the first").check()
    run.get_by_role("button", name="Run suite").click()

    matrix = page.locator("#eval-matrix table")
    expect(matrix).to_be_visible(timeout=60_000)
    # alpha's short echoes pass both checks; beta's long answers break max_length.
    expect(matrix.locator("td[data-state='pass']")).to_have_count(3)
    expect(matrix.locator("td[data-state='fail']")).to_have_count(3)
    expect(matrix).to_contain_text("win 100%")
    first, second = runs.list_runs(wb)[::-1]
    assert (first.mode, second.mode, second.baseline_id) == ("checks", "pairwise", first.model_id)
    assert page.get_by_label("Run ids (columns, in order)").input_value() == f"{first.id}, {second.id}"
    shot = Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "evaluate.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator(f"a[href$='eval-runs-{first.id}-{second.id}.csv']")).to_be_visible()


def test_label_judgeless_pairs_with_the_arena_keys(page, pairs_server):
    from playwright.sync_api import expect

    from app.arena import annotation

    srv, wb = pairs_server
    page.goto(srv.url)
    page.get_by_role("tab", name="Data").click()
    pair_box = page.get_by_label("Pair", exact=True)
    status = page.locator("#annotation-status")
    page.keyboard.press("n")  # Next pair (the arena's hidden New battle button is passed over)
    expect(status).to_contain_text("2 pairs waiting.")
    first = int(pair_box.input_value())
    page.keyboard.press("1")  # A is better: picked and saved
    expect(status).to_contain_text(f"Saved your label on pair {first}.")

    page.keyboard.press("N")
    expect(status).to_contain_text("1 pairs waiting.")
    second = int(pair_box.input_value())
    assert second != first
    # Typing in a text box is typing, not labelling.
    prompts = page.get_by_label("Prompts (one a line)")
    prompts.click()
    page.keyboard.type("n3 4")
    expect(prompts).to_have_value("n3 4")
    page.wait_for_timeout(500)
    expect(status).to_contain_text("1 pairs waiting.")
    prompts.blur()
    page.keyboard.press("2")  # B is better
    expect(status).to_contain_text(f"Saved your label on pair {second}.")
    expect(page.get_by_role("radio", name="B is better", exact=True)).to_be_checked()
    page.keyboard.press("n")
    expect(status).to_contain_text("No pair is waiting for a label.")

    # The labels as shown, mapped back through each pair's blind order.
    with wb.session() as s:
        from sqlmodel import select

        from app.core.tables import PairLabel
        labels = {lb.battle_id: lb for lb in s.exec(select(PairLabel))}
    assert set(labels) == {first, second}
    for bid, shown in ((first, "a"), (second, "b")):
        assert labels[bid].meta["shown_swapped"] == annotation.swapped(bid, labels[bid].labeler)
        want = annotation.SWAP[shown] if labels[bid].meta["shown_swapped"] else shown
        assert labels[bid].choice == want


def test_the_assistant_suggests_settings_that_apply_to_the_form_and_start(page, server, tmp_path):
    import httpx
    import yaml
    from playwright.sync_api import expect

    sample_data_in_the_train_form(page, server.url)
    page.locator("#train-assistant").get_by_text("Assistant: suggest settings").click()
    page.locator("#assistant-suggest").click()
    advice = page.locator("#assistant-advice")
    expect(advice).to_contain_text("Suggested for 195 rows (SFT)")
    expect(advice).to_contain_text("cutoff_len")
    page.locator("#assistant-apply").click()
    cutoff = page.get_by_label("Max tokens per example")
    expect(cutoff).not_to_have_value("1024")  # the recipe's default, replaced by the suggestion
    suggested = int(cutoff.input_value())
    page.get_by_label("Run name (optional)").fill("suggested")
    page.get_by_role("button", name="Start training").click()
    started = re.compile("Run suggested submitted|suggested is (queued|starting|training)")
    expect(page.get_by_text(started)).to_be_visible()
    run = next(r for r in httpx.get(f"{server.url}/api/runs").json() if r["name"] == "suggested")
    httpx.post(f"{server.url}/api/runs/{run['id']}/cancel")
    config = yaml.safe_load((tmp_path / "home" / "runs" / "suggested" / "config.yaml").read_text())
    assert config["cutoff_len"] == suggested < 1024
    assert config["lora_alpha"] == 2 * config["lora_rank"]  # applied through the form's YAML keys


def test_chat_with_one_model_and_keep_the_conversation(page, server, tmp_path):
    from playwright.sync_api import expect

    page.goto(server.url)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-model input").click()
    page.get_by_role("option", name="starter (base)").click()
    page.locator("#chat-prompt textarea").fill("Hello!")
    page.locator("#chat-send").click()
    log = page.locator("#chat-log")
    expect(log).to_contain_text("Hello!")
    answers = log.locator(".message.bot, [data-testid='bot']")
    expect(answers.first).to_be_visible(timeout=60_000)
    expect(page.locator("#chat-prompt textarea")).to_have_value("")
    page.locator("#chat-save").click()
    expect(page.locator("#chat-status")).to_contain_text("Saved to dataset playground-examples (1 rows)")
    shot = Path(os.environ.get("FORGELOOP_SCREENSHOT_DIR", tmp_path)) / "chat.png"
    page.screenshot(path=str(shot), full_page=True)


def test_browse_search_and_delete_a_dataset(page, server):
    from playwright.sync_api import expect

    page.goto(server.url)
    page.get_by_role("tab", name="Data").click()
    page.get_by_role("button", name="Register the sample SFT dataset").click()
    expect(page.get_by_text("Registered sample-sft")).to_be_visible()
    page.locator("#data-browse").get_by_text("Browse a dataset").click()
    page.locator("#browse-dataset input").click()
    page.get_by_role("option", name="sample-sft · sft · 195 rows").click()
    page.locator("#browse-query textarea").fill("hello")
    page.locator("#browse-show").click()
    expect(page.locator("#browse-about")).to_contain_text("Used by runs: none")
    expect(page.get_by_text("of 195 rows match")).to_be_visible()
    expect(page.locator("#browse-rows")).to_contain_text("Hello! How can I help you today?")
    page.locator("#browse-delete").click()
    expect(page.locator("#browse-status")).to_contain_text("Deleted sample-sft")


def test_a_reloaded_page_reattaches_to_the_run_in_training(page, tmp_path, starter_dir):
    import sys

    from playwright.sync_api import expect

    import launch
    from app.core.hardware import Hardware
    from app.core.jobs import JobSpec
    from app.core.progress_log import TRAINER_LOG
    from app.core.tables import Run
    from app.data import datasets
    from app.train import training

    home = tmp_path / "home"
    app, _, wb = launch.build_server(Settings(home=home))
    try:
        base = registry.register_base_model(wb, "starter", str(starter_dir))
        data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sample-sft", "sft")
        req = training.TrainRequest("sft_lora", base.id, [data.id], name="long-run",
                                    overrides={"cutoff_len": 256})
        folder = wb.settings.runs_dir / "long-run"
        plan = training.plan_run(wb, req, folder, Hardware())
        folder.mkdir(parents=True)
        out = folder / "output"
        fake = Path(__file__).resolve().parent / "fake_trainer.py"
        spec = JobSpec(command=[sys.executable, str(fake), str(out), "200", "0.2"], cwd=folder,
                       log_path=folder / "train.log", progress_path=out / TRAINER_LOG,
                       resources=frozenset({"cpu"}), title="long-run")
        row = Run(name="long-run", stage="sft", model_id=base.id, dataset_ids=[data.id], recipe="sft_lora",
                  request=req.as_dict(), config=plan.config, output_dir=str(out))
        training.queue_run(wb, row, spec)
        with ServerThread(app) as srv:
            for _ in range(2):  # the first visit and a reload
                page.goto(srv.url)
                page.get_by_role("tab", name="Train").click()
                expect(page.get_by_text("Watching long-run")).to_be_visible(timeout=20_000)
                expect(page.get_by_label("Max tokens per example")).to_have_value("256")
                expect(page.locator(".fl-progress[data-status='running']")).to_be_visible(timeout=20_000)
            # The form as a preset, loaded back after a change.
            page.get_by_text("Presets: save this form").click()
            page.locator("#preset-name textarea").fill("small-cutoff")
            page.locator("#preset-save").click()
            expect(page.locator("#train-status")).to_contain_text("Saved preset small-cutoff")
            page.get_by_label("Max tokens per example").fill("999")
            page.locator("#preset-pick input").click()
            page.get_by_role("option", name="small-cutoff").click()
            page.locator("#preset-load").click()
            expect(page.get_by_label("Max tokens per example")).to_have_value("256")
            # Cancel applies while it trains, and no longer once it stopped.
            cancel = page.get_by_role("button", name="Cancel", exact=True)
            expect(cancel).to_be_enabled()
            cancel.click()
            expect(cancel).to_be_disabled(timeout=30_000)
            expect(page.get_by_role("button", name="Delete", exact=True)).to_be_enabled()
    finally:
        wb.close()
