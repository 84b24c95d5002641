"""Arena battles: the same conversation to two models at once, one vote per turn.

After a vote the preferred answer becomes the shared history of both sides, so every
vote is a clean preference pair over an identical prompt history.
"""

from __future__ import annotations

import queue
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from app.arena.leaderboard import leaderboard_cache
from app.arena.voters import voter_limits
from app.core.errors import Conflict, EngineError, InvalidInput, NotFound
from app.core.tables import Battle, BattleTurn, ModelVersion, Vote
from app.inference.chat_engines import model_engines
from app.inference.generation import Finish, GenSettings
from app.models.registry import get_model, list_models, weights_key

if TYPE_CHECKING:
    from app.core.workbench import Workbench

CHOICES = ("a", "b", "tie", "both_bad")
# Names whose appearance in an answer can tell a voter which model wrote it.
FAMILY_NAMES = ("gpt", "chatgpt", "openai", "claude", "anthropic", "gemini", "llama", "meta ai",
                "qwen", "mistral", "mixtral", "deepseek", "phi", "gemma", "yi", "baichuan")


def arena_models(wb: Workbench) -> list[ModelVersion]:
    return [m for m in list_models(wb) if m.in_arena]


def pair_vote_counts(wb: Workbench) -> dict[tuple[int, int], int]:
    """Blind-battle votes per unordered model pair (by model id): the votes the default
    leaderboard counts, whose intervals sampling tries to narrow."""
    with wb.session() as s:
        q = (select(Battle.model_a_id, Battle.model_b_id, func.count(Vote.id))
             .join(Vote, Vote.battle_id == Battle.id)
             .where(Battle.mode == "anonymous")
             .group_by(Battle.model_a_id, Battle.model_b_id))
        counts: dict[tuple[int, int], int] = {}
        for a, b, n in s.exec(q):
            key = (min(a, b), max(a, b))
            counts[key] = counts.get(key, 0) + n
    return counts


def sample_pair(wb: Workbench, rng: random.Random | None = None) -> tuple[int, int]:
    """Pick two arena models with different weights, favouring pairs with few votes and wide
    intervals (of the default, blind-only leaderboard); the sides are shuffled."""
    from app.arena.ratings import sampling_weights

    rng = rng or random.Random()
    models = arena_models(wb)
    if len(models) < 2:
        raise InvalidInput("the arena needs at least two models: register or train another one")
    ids = [m.id for m in models]
    pos = {mid: i for i, mid in enumerate(ids)}
    counts = {(pos[a], pos[b]): n for (a, b), n in pair_vote_counts(wb).items() if a in pos and b in pos}
    widths = leaderboard_cache(wb).widths(ids)
    keys = [weights_key(m) for m in models]
    # A self-battle's vote never counts, so such pairs are not offered to voters.
    weights = {p: w for p, w in sampling_weights(len(ids), counts, widths).items()
               if keys[p[0]] != keys[p[1]]}
    if not weights:
        raise InvalidInput("the arena's models all share the same weights: add a different one")
    pairs, probs = zip(*weights.items(), strict=True)
    i, j = rng.choices(pairs, weights=probs, k=1)[0]
    a, b = ids[i], ids[j]
    return (a, b) if rng.random() < 0.5 else (b, a)


def new_battle(
    wb: Workbench,
    model_a_id: int | None = None,
    model_b_id: int | None = None,
    gen: GenSettings | None = None,
    voter: str = "local",
    mode: str = "named",
) -> Battle:
    """Named mode: the caller picks both models. Anonymous: the pair is sampled.

    A model may battle itself (two samples, for collecting preference data): that needs a
    temperature above 0, gets a seed if none was given (the sides sample with different
    seeds), and never counts toward the leaderboard."""
    if mode not in ("named", "anonymous"):
        raise InvalidInput("mode must be named or anonymous")
    if mode == "anonymous":
        model_a_id, model_b_id = sample_pair(wb)
    if model_a_id is None or model_b_id is None:
        raise InvalidInput("choose two models")
    for mid in (model_a_id, model_b_id):
        get_model(wb, mid)  # raises NotFound
    gen = gen or GenSettings()
    if model_a_id == model_b_id:
        if gen.temperature <= 0:
            raise InvalidInput("a model against itself needs sampling: set a temperature above 0")
        if gen.seed is None:
            gen = gen.with_seed(secrets.randbelow(2**31))
    battle = Battle(model_a_id=model_a_id, model_b_id=model_b_id, mode=mode, voter=voter,
                    gen_settings=gen.as_dict())
    with wb.session() as s:
        s.add(battle)
        s.commit()
        s.refresh(battle)
    return battle


def next_turn(wb: Workbench, battle_id: int) -> int:
    """The index the battle's next message gets (NotFound for an unknown battle)."""
    get_battle(wb, battle_id)
    with wb.session() as s:
        return s.exec(select(func.count(BattleTurn.id)).where(BattleTurn.battle_id == battle_id)).one()


def get_battle(wb: Workbench, battle_id: int) -> Battle:
    return wb.row(Battle, battle_id, "battle")


def turns(wb: Workbench, battle_id: int) -> list[BattleTurn]:
    with wb.session() as s:
        q = select(BattleTurn).where(BattleTurn.battle_id == battle_id).order_by(BattleTurn.turn)
        return list(s.exec(q))


def vote_for(wb: Workbench, battle_id: int, turn: int) -> Vote | None:
    with wb.session() as s:
        return s.exec(select(Vote).where(Vote.battle_id == battle_id, Vote.turn == turn)).first()


def carried_answers(wb: Workbench, battle_id: int) -> dict[int, str]:
    """Per voted turn, the answer both sides continue from: what the next turn's prompt
    history really holds, else (the latest turn) the vote's choice. A both-bad turn has
    none until the next message brings the voter's own answer."""
    rows = turns(wb, battle_id)
    with wb.session() as s:
        votes = {v.turn: v.choice for v in s.exec(select(Vote).where(Vote.battle_id == battle_id))}
    carried = {}
    for t, nxt in zip(rows, [*rows[1:], None], strict=False):
        if nxt is not None and len(nxt.messages) >= 2:
            carried[t.turn] = nxt.messages[-2]["content"]
        elif votes.get(t.turn) in ("a", "tie"):
            carried[t.turn] = t.answer_a
        elif votes.get(t.turn) == "b":
            carried[t.turn] = t.answer_b
    return carried


@dataclass
class TurnProgress:
    """What both sides have said so far; ``turn`` is set once both finished and it is stored."""

    answer_a: str = ""
    answer_b: str = ""
    done_a: bool = False
    done_b: bool = False
    turn: BattleTurn | None = None
    timings: dict[str, Any] = field(default_factory=dict)


def _history(wb: Workbench, battle_id: int, edited_answer: str | None) -> tuple[list[dict], int]:
    previous = turns(wb, battle_id)
    if not previous:
        return [], 0
    last = previous[-1]
    vote = vote_for(wb, battle_id, last.turn)
    if vote is None:
        raise Conflict("vote on the current answers before the next message")
    if vote.choice == "both_bad":
        if not (edited_answer or "").strip():
            raise Conflict("both answers were rated bad: write the answer you wanted, or start over")
        chosen = edited_answer.strip()
        limit = voter_limits(wb).max_prompt_chars  # it is voter text, like a prompt
        if 0 < limit < len(chosen):
            raise InvalidInput(f"the answer you wrote is too long ({len(chosen)} characters; "
                               f"the limit is {limit})")
    else:  # the preferred answer becomes the shared history; a tie keeps A's
        chosen = last.answer_b if vote.choice == "b" else last.answer_a
    return last.messages + [{"role": "assistant", "content": chosen}], len(previous)


def _generate(wb: Workbench, mv: ModelVersion, messages: list[dict], gen: GenSettings, side: str,
              out: queue.Queue) -> None:
    """Stream one side into ``out``; always ends with (side, timing dict)."""
    start = time.perf_counter()
    first, pieces, finish, error = None, 0, "stop", None
    try:
        for piece in model_engines(wb).engine(mv).stream(messages, gen):
            if isinstance(piece, Finish):
                finish = piece.reason
                continue
            if first is None:
                first = time.perf_counter() - start
            pieces += 1
            out.put((side, piece))
    except Exception as e:  # a failing side is recorded, not fatal to the battle
        finish, error = "error", f"{type(e).__name__}: {e}"
    total = time.perf_counter() - start
    gen_time = total - (first or 0.0)
    timing = {"ttft_s": first, "total_s": total, "tokens": pieces, "finish": finish,
              "tokens_per_s": pieces / gen_time if pieces and gen_time > 0 else None}
    if error:
        timing["error"] = error
    out.put((side, timing))


def side_seeds(gen: GenSettings, turn: int, fresh: bool = False) -> dict[str, int | None]:
    """Each side's sampling seed for a turn of a seeded battle (None: unseeded); ``fresh``
    draws new ones, for asking again."""
    if gen.seed is None:
        return {"a": None, "b": None}
    base = secrets.randbelow(2**31) if fresh else gen.seed + 2 * turn
    return {"a": base % 2**32, "b": (base + 1) % 2**32}


def _answer_both(wb: Workbench, battle: Battle, messages: list[dict], seeds: dict[str, int | None]
                 ) -> Iterator[TurnProgress]:
    """Both sides' answers to ``messages``, concurrently, as pieces arrive."""
    gen = GenSettings(**battle.gen_settings)
    models = {"a": get_model(wb, battle.model_a_id), "b": get_model(wb, battle.model_b_id)}
    out: queue.Queue = queue.Queue()
    for side, mv in models.items():
        side_gen = gen.with_seed(seeds.get(side)) if gen.seed is not None else gen
        threading.Thread(target=_generate, args=(wb, mv, messages, side_gen, side, out), daemon=True).start()
    progress = TurnProgress()
    while not (progress.done_a and progress.done_b):
        side, item = out.get()
        if isinstance(item, dict):
            setattr(progress, f"done_{side}", True)
            progress.timings[side] = item
        else:
            setattr(progress, f"answer_{side}", getattr(progress, f"answer_{side}") + item)
        yield replace(progress, timings=dict(progress.timings))  # a snapshot per update


def stream_turn(
    wb: Workbench, battle_id: int, prompt: str, edited_answer: str | None = None, fresh_seeds: bool = False
) -> Iterator[TurnProgress]:
    """Send ``prompt`` to both sides concurrently, yielding progress as pieces arrive;
    the last item carries the stored turn. Voters' budgets are charged around this by
    ``voters.admit_message``; the message checks here are the same ones."""
    battle = get_battle(wb, battle_id)
    history, index = _history(wb, battle_id, edited_answer)
    prompt = voter_limits(wb).check_prompt(prompt, index)
    messages = history + [{"role": "user", "content": prompt}]
    gen = GenSettings(**battle.gen_settings)
    seeds = side_seeds(gen, index, fresh_seeds)
    progress = TurnProgress()
    for progress in _answer_both(wb, battle, messages, seeds):
        yield progress
    if not (progress.answer_a or progress.answer_b) and all(
            t.get("finish") == "error" for t in progress.timings.values()):
        # Nothing to judge: storing it would only make the voter vote on two errors.
        raise EngineError("neither model could answer: try again, or start a new battle")
    stored_gen = {**gen.as_dict(), "seeds": seeds} if gen.seed is not None else gen.as_dict()
    turn = BattleTurn(battle_id=battle_id, turn=index, messages=messages,
                      answer_a=progress.answer_a, answer_b=progress.answer_b,
                      timings=progress.timings, gen_settings=stored_gen)
    progress.turn = _insert_once(wb, turn, "this turn was answered twice at once; reload the battle")
    yield progress


def replay_turn(wb: Workbench, battle_id: int, turn: int) -> dict[str, str]:
    """Both sides' answers to a stored turn again, with the seeds it was sampled with
    (nothing is stored): a seeded battle gives the same answers on the same setup."""
    stored = next((t for t in turns(wb, battle_id) if t.turn == turn), None)
    if stored is None:
        raise NotFound(f"battle {battle_id} has no turn {turn}")
    seeds = (stored.gen_settings or {}).get("seeds") or {}
    if not any(v is not None for v in seeds.values()):
        raise InvalidInput("this turn was sampled without a seed, so it cannot be replayed exactly")
    *_, last = _answer_both(wb, get_battle(wb, battle_id), stored.messages, seeds)
    return {"answer_a": last.answer_a, "answer_b": last.answer_b}


def _insert_once(wb: Workbench, row, clash: str):
    """Insert a row guarded by a unique constraint; a clash becomes a Conflict."""
    try:
        with wb.write_lock, wb.session() as s:
            s.add(row)
            s.commit()
            s.refresh(row)
    except IntegrityError as e:
        raise Conflict(clash) from e
    return row


def play_turn(wb: Workbench, battle_id: int, prompt: str, edited_answer: str | None = None) -> BattleTurn:
    """Like ``stream_turn`` but returns only the stored turn."""
    *_, last = stream_turn(wb, battle_id, prompt, edited_answer)
    return last.turn


def unvoted_turn(wb: Workbench, battle_id: int) -> BattleTurn:
    """The last turn, which must not have a vote yet: what ``regenerate`` asks again."""
    existing = turns(wb, battle_id)
    if not existing:
        raise InvalidInput("nothing to regenerate yet")
    last = existing[-1]
    if vote_for(wb, battle_id, last.turn) is not None:
        raise Conflict("this turn already has a vote; send a new message instead")
    return last


def regenerate(wb: Workbench, battle_id: int) -> Iterator[TurnProgress]:
    """Drop the last, not yet voted turn and ask both sides again."""
    last = unvoted_turn(wb, battle_id)
    edited = None
    if last.turn > 0:  # keep whatever history the turn was built on
        edited = last.messages[-2]["content"]
    with wb.session() as s:
        s.delete(s.get(BattleTurn, last.id))
        s.commit()
    # New seeds: asking a seeded battle again with the same ones would repeat the answers.
    return stream_turn(wb, battle_id, last.messages[-1]["content"], edited_answer=edited, fresh_seeds=True)


def quality_flags(turn: BattleTurn, names: dict[str, str]) -> list[str]:
    """Reasons to keep a vote out of datasets and the leaderboard by default."""
    flags = []
    for side, text in (("a", turn.answer_a), ("b", turn.answer_b)):
        timing = (turn.timings or {}).get(side, {})
        if timing.get("finish") == "error":
            flags.append(f"error_{side}")
        elif not text.strip():
            flags.append(f"empty_{side}")
        elif timing.get("finish") == "length":
            flags.append(f"truncated_{side}")
        if _leaks_identity(text, names.values()):
            flags.append(f"identity_{side}")
    return flags


def _leaks_identity(text: str, model_names: Any) -> bool:
    lowered = text.lower()
    for name in [*FAMILY_NAMES, *(n.lower() for n in model_names)]:
        if len(name) >= 3 and re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", lowered):
            return True
    return False


def vote(
    wb: Workbench, battle_id: int, choice: str, voter: str = "local", turn: int | None = None
) -> Vote:
    """Record a vote on a turn (the latest by default). One vote per turn, by the DB."""
    if choice not in CHOICES:
        raise InvalidInput(f"a vote must be one of {', '.join(CHOICES)}, got {choice!r}")
    with wb.session() as s:  # one session: votes arrive in bursts from many voters
        battle = s.get(Battle, battle_id)
        if battle is None:
            raise NotFound(f"no battle with id {battle_id}")
        q = select(BattleTurn).where(BattleTurn.battle_id == battle_id)
        q = q.where(BattleTurn.turn == turn) if turn is not None else q.order_by(BattleTurn.turn.desc())
        target = s.exec(q.limit(1)).first()
        if target is None:
            if turn is None:
                raise InvalidInput("this battle has no answers to vote on yet")
            raise NotFound(f"battle {battle_id} has no turn {turn}")
        names = {"a": s.get(ModelVersion, battle.model_a_id).name,
                 "b": s.get(ModelVersion, battle.model_b_id).name}
    row = Vote(battle_id=battle_id, turn=target.turn, choice=choice, voter=voter,
               flags=quality_flags(target, names))
    _insert_once(wb, row, f"turn {target.turn} of battle {battle_id} already has a vote")
    return row


def reveal(wb: Workbench, battle_id: int) -> dict[str, str]:
    battle = get_battle(wb, battle_id)
    return {"a": get_model(wb, battle.model_a_id).name, "b": get_model(wb, battle.model_b_id).name}


def list_battles(wb: Workbench, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Battles with their turns and votes, newest first (for the API)."""
    with wb.session() as s:
        battles = s.exec(select(Battle).order_by(Battle.id.desc()).offset(offset).limit(limit)).all()
        ids = [b.id for b in battles]
        all_turns = s.exec(select(BattleTurn).where(BattleTurn.battle_id.in_(ids))).all() if ids else []
        all_votes = s.exec(select(Vote).where(Vote.battle_id.in_(ids))).all() if ids else []
    votes = {(v.battle_id, v.turn): v for v in all_votes}
    out = []
    for b in battles:
        rows = []
        for t in sorted((t for t in all_turns if t.battle_id == b.id), key=lambda t: t.turn):
            v = votes.get((b.id, t.turn))
            rows.append({"turn": t.turn, "messages": t.messages, "answer_a": t.answer_a,
                         "answer_b": t.answer_b, "timings": t.timings, "gen_settings": t.gen_settings,
                         "vote": None if v is None else {"choice": v.choice, "voter": v.voter,
                                                         "flags": v.flags,
                                                         "at": v.created_at.isoformat()}})
        out.append({"id": b.id, "mode": b.mode, "model_a_id": b.model_a_id, "model_b_id": b.model_b_id,
                    "voter": b.voter, "created_at": b.created_at.isoformat(), "turns": rows})
    return out
