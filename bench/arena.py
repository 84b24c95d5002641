"""Arena figures: battle wall time vs. the slower side alone, vote ingest over HTTP,
the leaderboard maths and a 100k-vote DPO snapshot.

    python bench/arena.py [--profile-dpo]

1. A battle streams both sides at once, so it should take about as long as the slower
   side alone (target <= 1.2x). (a) two Ollama-stub models, one answering twice as many
   words; (b) two tiny local starter models, each served by its own worker process with
   its share of the CPU threads (a side alone is timed through the same workers, so both
   figures use the configuration a battle uses).
2. POST /api/feedback from 50 concurrent clients against the real server (target >= 200
   votes/s and no vote lost). The vote rate limit is switched off (voter_votes_per_minute=0).
3. Bradley-Terry + 200 bootstraps on 100k simulated votes, 20 models (target <= 2 s),
   reusing bench/ratings_bench.py.
4. 100k decisive votes -> a registered DPO snapshot (target <= 5 s).

Set-up work (building models, inserting rows, starting servers) is not timed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run as a plain script from anywhere: make the repo root importable before importing app.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from sqlalchemy import func  # noqa: E402
from sqlmodel import select  # noqa: E402

from app.arena import battles  # noqa: E402
from app.bootstrap import open_workbench  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from app.core.tables import Battle, BattleTurn, Vote  # noqa: E402
from app.core.workbench import Workbench  # noqa: E402
from app.inference.chat_engines import model_engines  # noqa: E402
from app.inference.generation import Finish, GenSettings  # noqa: E402
from app.inference.workers import worker_status  # noqa: E402
from app.models import registry  # noqa: E402

BATTLE_TARGET = 1.2
# (a) Ollama stub: seconds per streamed word; the slow model answers every prompt twice over.
STUB_DELAY = 0.02
STUB_PROMPT_WORDS = (8, 16, 32)
STUB_ROUNDS = 3
# (b) local starter models, greedy so every round generates the same tokens.
LOCAL_PROMPTS = ("Hello!", "What color is the sky?", "Tell me about the cat, the dog and the weather today.")
LOCAL_ROUNDS = 3
LOCAL_GEN = GenSettings(temperature=0.0, max_new_tokens=128)


def LOCAL_SPEC(seed: int):  # noqa: N802 - a spec factory, read like a class
    from app.models.starter_model import StarterSpec

    return StarterSpec(seed=seed, pretrain_steps=0, hidden_size=256, intermediate_size=688,
                       num_hidden_layers=4)

N_BATTLES = 2000
CLIENTS = 50
INGEST_TARGET = 200.0

DPO_VOTES = 100_000
DPO_PROMPTS = 25_000
DPO_TARGET = 5.0

WORDS = ("river stone cloud garden lamp window orange quiet morning letter bridge forest candle "
         "silver market winter harbor pencil meadow thunder ladder violet engine mirror").split()


def words(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def drain(wb: Workbench, mv, messages: list[dict], gen: GenSettings) -> tuple[float, int]:
    """Stream one model's answer to the end: (seconds, pieces)."""
    start = time.perf_counter()
    pieces = 0
    for piece in model_engines(wb).engine(mv).stream(messages, gen):
        if not isinstance(piece, Finish):
            pieces += 1
    return time.perf_counter() - start, pieces


def concurrent_pair(wb: Workbench, a, b, messages: list[dict], gen: GenSettings) -> float:
    """Both engines in two plain threads, no arena code: the contention floor."""
    threads = [threading.Thread(target=drain, args=(wb, mv, messages, gen)) for mv in (a, b)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def time_battles(wb: Workbench, a, b, prompts: list[str], rounds: int, gen: GenSettings, label: str,
                 pair_floor: bool = False) -> list[float]:
    """Per prompt: median battle time vs the median time of the slower side alone.
    Returns the per-prompt ratios."""
    ratios = []
    for prompt in prompts:
        battle_t, a_t, b_t, floor_t = [], [], [], []
        a_n = b_n = 0
        for r in range(rounds):
            # Alternate the order so neither measurement always runs on a warmer process.
            steps = ["battle", "solo"] if r % 2 == 0 else ["solo", "battle"]
            for step in steps:
                if step == "battle":
                    battle = battles.new_battle(wb, a.id, b.id, gen=gen)
                    start = time.perf_counter()
                    turn = battles.play_turn(wb, battle.id, prompt)
                    battle_t.append(time.perf_counter() - start)
                    assert turn.answer_a and turn.answer_b, turn.timings
                else:
                    t, a_n = drain(wb, a, user(prompt), gen)
                    a_t.append(t)
                    t, b_n = drain(wb, b, user(prompt), gen)
                    b_t.append(t)
            if pair_floor:
                floor_t.append(concurrent_pair(wb, a, b, user(prompt), gen))
        battle_m, a_m, b_m = (statistics.median(x) for x in (battle_t, a_t, b_t))
        slower = max(a_m, b_m)
        ratios.append(battle_m / slower)
        extra = ""
        if pair_floor:
            floor_m = statistics.median(floor_t)
            extra = f"; both engines in 2 bare threads {floor_m:.3f} s ({floor_m / slower:.2f}x)"
        print(f"  {label}, {len(prompt.split())}-word prompt ({a_n} vs {b_n} pieces): "
              f"battle {battle_m:.3f} s, sides alone {a_m:.3f} / {b_m:.3f} s "
              f"-> {battle_m / slower:.2f}x the slower side"
              f"{extra} (median of {rounds})")
    return ratios


def bench_stub_battles(home: Path) -> None:
    from tests.ollama_stub import OllamaStub, default_brain

    rng = random.Random(1)
    stub = OllamaStub(models=["swift:1b"], chunk_delay=STUB_DELAY)
    stub.add_model("steady:1b", brain=lambda model, prompt: default_brain(model, f"{prompt} {prompt}"))
    wb = open_workbench(Settings(home=home), start_jobs=False)
    try:
        with stub:
            a = registry.register_remote_model(wb, "swift", "ollama", stub.url, "swift:1b")
            b = registry.register_remote_model(wb, "steady", "ollama", stub.url, "steady:1b")
            gen = GenSettings(temperature=0.0)
            battles.play_turn(wb, battles.new_battle(wb, a.id, b.id, gen=gen).id, "warm up")
            prompts = [words(n, rng) for n in STUB_PROMPT_WORDS]
            ratios = time_battles(wb, a, b, prompts, STUB_ROUNDS, gen, "stub")
    finally:
        wb.close()
    print(f"1a battle vs slower side alone, 2 Ollama-stub models ({STUB_DELAY:g} s/word): "
          f"median {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x "
          f"(target <= {BATTLE_TARGET:g}x)")


def bench_local_battles(home: Path) -> None:
    from app.models.starter_model import build_starter_model

    wb = open_workbench(Settings(home=home))
    try:
        # Untrained (random-weight) starters: the trained one stops after a few tokens, and the
        # figure is about two sides generating at once, so both should write the full budget.
        sides = []
        for seed in (1, 2):
            folder = home / f"random-{seed}"
            build_starter_model(folder, LOCAL_SPEC(seed=seed))
            sides.append(registry.register_base_model(wb, f"random-{seed}", str(folder)))
        a, b = sides
        for mv in (a, b):  # load both engines and run each once before timing
            drain(wb, mv, user("warm up"), LOCAL_GEN)
        battles.play_turn(wb, battles.new_battle(wb, a.id, b.id, gen=LOCAL_GEN).id, "warm up")
        ratios = time_battles(wb, a, b, list(LOCAL_PROMPTS), LOCAL_ROUNDS, LOCAL_GEN, "local",
                              pair_floor=True)
        threads = [w["threads"] for w in worker_status(wb)]
    finally:
        wb.close()
    print(f"1b battle vs slower side alone, 2 local random-weight starter-shaped models (hidden 256, "
          f"4 layers) in worker processes "
          f"({os.cpu_count()} cores, {threads} threads each; greedy, <= {LOCAL_GEN.max_new_tokens} tokens): "
          f"median {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x (target <= {BATTLE_TARGET:g}x)")


# -- 2. vote ingest ----------------------------------------------------------------------------------


def seed_battles(wb: Workbench, a_id: int, b_id: int, template: BattleTurn, n: int) -> list[int]:
    """``n`` battles with one answered turn each, inserted in one transaction."""
    with wb.session() as s:
        first = (s.exec(select(func.max(Battle.id))).one() or 0) + 1
    now = datetime.now(UTC)
    ids = list(range(first, first + n))
    battles = [{"id": i, "model_a_id": a_id, "model_b_id": b_id, "mode": "named", "voter": "bench",
                "gen_settings": template.gen_settings, "created_at": now} for i in ids]
    turns = [{"battle_id": i, "turn": 0, "messages": template.messages, "answer_a": template.answer_a,
              "answer_b": template.answer_b, "timings": template.timings,
              "gen_settings": template.gen_settings, "created_at": now} for i in ids]
    with wb.engine.begin() as conn:
        conn.execute(Battle.__table__.insert(), battles)
        conn.execute(BattleTurn.__table__.insert(), turns)
    return ids


def post_votes(url: str, battle_ids: list[int], client: str) -> dict:
    """POST one vote per battle from CLIENTS threads at once, with httpx.Client or the
    standard library's http.client (both keep their connection alive).
    Returns seconds, counts of HTTP statuses and the first errors."""
    import http.client
    from urllib.parse import urlsplit

    import httpx

    host = urlsplit(url)
    shares = [battle_ids[k::CLIENTS] for k in range(CLIENTS)]
    statuses: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(CLIENTS + 1)

    def record(status: int, text: str) -> None:
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status != 201:
                errors.append(f"{status} {text[:120]}")

    def with_httpx(ids: list[int]) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            ready.wait()
            for n, bid in enumerate(ids):
                resp = http.post("/api/feedback", json={"battle_id": bid, "choice": "ab"[n % 2]})
                record(resp.status_code, resp.text)

    def with_stdlib(ids: list[int]) -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
        ready.wait()
        for n, bid in enumerate(ids):
            conn.request("POST", "/api/feedback", body=json.dumps({"battle_id": bid, "choice": "ab"[n % 2]}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            record(resp.status, resp.read().decode(errors="replace"))
        conn.close()

    def run(ids: list[int]) -> None:
        try:
            (with_httpx if client == "httpx" else with_stdlib)(ids)
        except Exception as e:  # counted as lost below: sent - 201 answers
            with lock:
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(ids,)) for ids in shares]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - start, "statuses": statuses, "errors": errors[:5]}


def post_votes_elsewhere(url: str, battle_ids: list[int], client: str) -> dict:
    """``post_votes`` in a separate Python process, so the clients do not share the server's GIL."""
    out = subprocess.run([sys.executable, __file__, "--vote-client", url, client],
                         input=json.dumps(battle_ids), capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    return result


def bench_vote_ingest(home: Path) -> None:
    from launch import build_server
    from tests.conftest import ServerThread
    from tests.ollama_stub import OllamaStub

    # The API rate-limits votes per caller (all anonymous API calls are the user "api");
    # 0 switches the limit off so the bench measures ingest, not the limiter.
    settings = Settings(home=home, voter_votes_per_minute=0)
    with contextlib.redirect_stdout(sys.stderr):  # the installed gradio prints "new /" on mount
        server, _demo, wb = build_server(settings)
    # As briefed (httpx clients sharing the server's process and GIL), and with the lightest
    # client in its own process, which is closer to what the server alone can take.
    variants = [("httpx.Client threads in the server's process", "httpx", False),
                ("stdlib http.client threads in a separate process", "stdlib", True)]
    try:
        with OllamaStub(models=["swift:1b", "steady:1b"]) as stub:
            a = registry.register_remote_model(wb, "swift", "ollama", stub.url, "swift:1b")
            b = registry.register_remote_model(wb, "steady", "ollama", stub.url, "steady:1b")
            # One real battle gives a genuine turn; the rest are copies of it, inserted directly.
            battle = battles.new_battle(wb, a.id, b.id)
            template = battles.play_turn(wb, battle.id, "Which is the longest river in the world?")
        ids = [battle.id, *seed_battles(wb, a.id, b.id, template, len(variants) * N_BATTLES - 1)]
        with ServerThread(server) as srv:
            for k, (label, client, elsewhere) in enumerate(variants):
                batch = ids[k * N_BATTLES:(k + 1) * N_BATTLES]
                res = (post_votes_elsewhere if elsewhere else post_votes)(srv.url, batch, client)
                with wb.session() as s:
                    stored = s.exec(select(func.count(Vote.id)).where(Vote.battle_id.in_(batch))).one()
                    voters = sorted(set(s.exec(select(Vote.voter).where(Vote.battle_id.in_(batch))).all()))
                created = res["statuses"].get(201, 0)
                other = {k: v for k, v in res["statuses"].items() if k != 201} or "none"
                rate = len(batch) / res["seconds"]
                ok = created == stored == len(batch)
                print(f"2  vote ingest, {CLIENTS} clients, {label}: {len(batch)} votes in "
                      f"{res['seconds']:.2f} s = {rate:.0f} votes/s (target >= {INGEST_TARGET:g}); "
                      f"sent {len(batch)}, 201s {created}, vote rows {stored}, lost {len(batch) - stored}, "
                      f"other answers {other}, voters {voters} ({'0 lost' if ok else 'MISMATCH'})")
                for e in res["errors"]:
                    print(f"   error: {e}")
    finally:
        wb.close()
    print("2  (server: launch.build_server with voter_votes_per_minute=0, i.e. the vote rate limit off)")


# -- 3. ratings ----------------------------------------------------------------------------------


def bench_ratings() -> None:
    from app.arena.ratings import leaderboard
    from bench import ratings_bench as rb

    table = rb.simulate()
    leaderboard(table, rounds=2)  # warm-up, as in ratings_bench
    start = time.perf_counter()
    board = leaderboard(table, rounds=rb.ROUNDS, seed=1)
    elapsed = time.perf_counter() - start
    assert len(board) == rb.N_MODELS
    print(f"3  bt+{rb.ROUNDS} bootstraps on {rb.N_VOTES} votes, {rb.N_MODELS} models: {elapsed:.2f} s "
          f"(target <= {rb.TARGET_S:g} s; bench/ratings_bench.py)")


# -- 4. votes -> DPO snapshot ----------------------------------------------------------------------


def seed_votes(wb: Workbench, model_ids: list[int], n: int) -> None:
    """``n`` one-turn battles, each with a decisive vote and answers no other vote shares."""
    rng = random.Random(4)
    prompts = [f"{words(rng.randint(6, 24), rng)} ({k})?" for k in range(DPO_PROMPTS)]
    now = datetime.now(UTC)
    battles, turns, votes = [], [], []
    for i in range(1, n + 1):
        a, b = rng.sample(model_ids, 2)
        battles.append({"id": i, "model_a_id": a, "model_b_id": b, "mode": "anonymous", "voter": "bench",
                        "gen_settings": {}, "created_at": now})
        turns.append({"battle_id": i, "turn": 0, "messages": user(rng.choice(prompts)),
                      "answer_a": f"{words(rng.randint(20, 80), rng)} [{i}a]",
                      "answer_b": f"{words(rng.randint(20, 80), rng)} [{i}b]",
                      "timings": {"a": {"finish": "stop"}, "b": {"finish": "stop"}},
                      "gen_settings": {}, "created_at": now})
        votes.append({"battle_id": i, "turn": 0, "choice": "ab"[i % 2], "voter": "bench", "flags": [],
                      "created_at": now})
    with wb.engine.begin() as conn:
        conn.execute(Battle.__table__.insert(), battles)
        conn.execute(BattleTurn.__table__.insert(), turns)
        conn.execute(Vote.__table__.insert(), votes)


def bench_dpo(home: Path, profile: bool) -> None:
    from app.arena import preference_export

    wb = open_workbench(Settings(home=home), start_jobs=False)
    try:
        ids = [registry.register_remote_model(wb, f"m{k}", "openai", "http://127.0.0.1:9/v1", f"m{k}").id
               for k in range(20)]
        seed_votes(wb, ids, DPO_VOTES)
        gc.collect()  # garbage from the set-up is not the snapshot's (GC stays on while timing)
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        start = time.perf_counter()
        ds = preference_export.build_dpo_dataset(wb, "bench-100k")
        elapsed = time.perf_counter() - start
        if prof is not None:
            prof.disable()
        size_mb = Path(ds.path).stat().st_size / 1e6
    finally:
        wb.close()
    note = " [under cProfile]" if profile else ""
    print(f"4  {DPO_VOTES} votes -> DPO snapshot: {ds.num_rows} rows ({size_mb:.0f} MB jsonl) "
          f"in {elapsed:.2f} s{note} (target <= {DPO_TARGET:g} s)")
    if prof is not None:
        import pstats

        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile-dpo", action="store_true", help="run the DPO snapshot under cProfile")
    p.add_argument("--only", choices=["1a", "1b", "2", "3", "4"], action="append",
                   help="run only these parts (repeatable)")
    p.add_argument("--vote-client", nargs=2, metavar=("URL", "CLIENT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.vote_client:  # child mode of post_votes_elsewhere: battle ids on stdin
        url, client = args.vote_client
        print(json.dumps(post_votes(url, json.loads(sys.stdin.read()), client)))
        return
    parts = set(args.only or ["1a", "1b", "2", "3", "4"])
    with tempfile.TemporaryDirectory(prefix="forgeloop-arena-bench-") as tmp:
        home = Path(tmp)
        if "1a" in parts:
            bench_stub_battles(home / "stub")
        if "1b" in parts:
            bench_local_battles(home / "local")
        if "2" in parts:
            bench_vote_ingest(home / "server")
        if "3" in parts:
            bench_ratings()
        if "4" in parts:
            bench_dpo(home / "dpo", args.profile_dpo)


if __name__ == "__main__":
    main()
