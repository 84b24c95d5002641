"""Arena tab's history: past battles and votes, filtered; open one; change, withdraw, flag
or unflag its votes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.arena import history
from app.arena.battles import CHOICES
from app.core.workbench import Workbench
from tabs.common import UserError, model_choices, user_errors
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["battle", "when", "mode", "model A", "model B", "turns", "votes"]
FLAGGED = {"any": None, "flagged": True, "not flagged": False}


def history_frame(found: dict) -> pd.DataFrame:
    rows = [{"battle": b["id"], "when": b["created_at"][:16].replace("T", " "), "mode": b["mode"],
             "model A": b["model_a"], "model B": b["model_b"], "turns": b["turns"],
             "votes": "; ".join(f"turn {v['turn'] + 1}: {v['choice']} by {v['voter']}"
                                + (f" ({', '.join(v['flags'])})" if v["flags"] else "") for v in b["votes"])}
            for b in found["battles"]]
    return to_frame(rows, COLUMNS)


def detail_markdown(d: dict) -> str:
    parts = [f"**Battle #{d['id']}** ({d['mode']}): A = **{d['models']['a']}**, B = **{d['models']['b']}**"]
    for t in d["turns"]:
        vote, said = t["vote"], "no vote"
        if vote:
            said = f"vote **{vote['choice']}** by {vote['voter']}"
            said += f", flags {', '.join(vote['flags'])}" if vote["flags"] else ""
        parts.append(f"**Turn {t['turn'] + 1}** — {said}\n\n> {t['prompt']}\n\n"
                     f"A: {t['answer_a'][:400]}\n\nB: {t['answer_b'][:400]}")
    return "\n\n".join(parts)


def build(wb: Workbench) -> None:
    with gr.Row():
        model = gr.Dropdown([("any", ""), *model_choices(wb)], value="", label="Battles of model")
        voter = gr.Textbox(label="Voter")
        flagged = gr.Dropdown(list(FLAGGED), value="any", label="Flags")
        since = gr.Textbox(label="From (YYYY-MM-DD)")
        until = gr.Textbox(label="To (YYYY-MM-DD)")
        search = gr.Button("Search", elem_id="history-search")
    found = gr.Markdown()
    table = Table(headers=COLUMNS, interactive=False, label="Battles", elem_id="history-table")
    with gr.Row():
        battle = gr.Number(label="Battle", precision=0, elem_id="history-battle")
        open_it = gr.Button("Open", elem_id="history-open")
        turn = gr.Number(label="Turn", value=1, precision=0, minimum=1)
        choice = gr.Radio(list(CHOICES), label="Vote", value="a")
        change = gr.Button("Change the vote", elem_id="history-change")
        withdraw = gr.Button("Withdraw it")
        flag = gr.Button("Flag")
        unflag = gr.Button("Unflag")
    detail = gr.Markdown(elem_id="history-detail")

    @user_errors
    def on_search(model_id, who, flags, start, end):
        mid = int(model_id) if model_id not in (None, "") else None
        result = history.battle_history(wb, mid, (who or "").strip() or None, FLAGGED[flags], start or None,
                                        end or None, limit=200)
        shown, total = len(result["battles"]), result["total"]
        return (f"{total} battles" + (f" (the newest {shown} shown)" if shown < total else ""),
                history_frame(result))

    def need(battle_id) -> int:
        if battle_id is None:
            raise UserError("type the number of a battle first")
        return int(battle_id)

    @user_errors
    def on_open(battle_id):
        return detail_markdown(history.battle_detail(wb, need(battle_id)))

    def acting(action):
        @user_errors
        def run(battle_id, turn_number, vote_choice):
            bid, index = need(battle_id), max(1, int(turn_number or 1)) - 1
            action(bid, index, vote_choice)
            return detail_markdown(history.battle_detail(wb, bid))

        return run

    filters = [model, voter, flagged, since, until]
    search.click(on_search, filters, [found, table], api_name="battle_history")
    open_it.click(on_open, battle, detail, api_name="open_battle")
    inputs = [battle, turn, choice]
    change.click(acting(lambda b, t, c: history.change_vote(wb, b, t, c)), inputs, detail,
                 api_name="change_vote")
    withdraw.click(acting(lambda b, t, _: history.withdraw_vote(wb, b, t)), inputs, detail,
                   api_name="withdraw_vote")
    flag.click(acting(lambda b, t, _: history.flag_vote(wb, b, t, True)), inputs, detail,
               api_name="flag_vote")
    unflag.click(acting(lambda b, t, _: history.flag_vote(wb, b, t, False)), inputs, detail,
                 api_name="unflag_vote")
