"""Arena tab: blind or named battles streaming side by side, votes, the leaderboard, and
votes → training data. ``build_battle`` and ``build_leaderboard`` also make the voter app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import gradio as gr

from app.arena import battles, preference_export, voters
from app.arena.leaderboard import describe_exclusions, leaderboard_cache
from app.core.errors import ForgeloopError
from app.core.workbench import Workbench
from app.inference.generation import GenSettings
from tabs import arena_history, workers_panel
from tabs.common import SHORTCUT_HELP, UserError, model_choices, shortcuts_script, user_errors
from tabs.plots import heatmap
from tabs.table import Table

# The shared keys (tabs.common.SHORTCUT_KEYS): 1-4 vote, N starts a new battle.
SHORTCUT_VIEW = {**{c: [f"#vote-{c}"] for c in ("a", "b", "tie", "both_bad")}, "next": ["#new-battle"]}
SHORTCUTS_JS = shortcuts_script(SHORTCUT_VIEW)
VOTE_LABELS = {"a": "👈 A is better", "b": "👉 B is better", "tie": "🤝 Tie", "both_bad": "👎 Both are bad"}


def voter_id(request: gr.Request | None) -> str:
    """The logged-in user, else this browser session: never the IP alone."""
    if request is not None and request.username:
        return request.username
    return f"session:{request.session_hash}" if request is not None else "local"


def chat_for(turn_rows, side: str, live: tuple[str, str] | None = None,
             carried: dict[int, str] | None = None) -> list[dict]:
    """One side's view. A voted turn shows the answer both sides continue from (the
    preferred or the voter's own), this side's answer folded above it when it differs,
    so neither panel hides what the next turn builds on."""
    msgs: list[dict] = []
    for t in turn_rows:
        own = t.answer_a if side == "a" else t.answer_b
        kept = (carried or {}).get(t.turn)
        msgs.append({"role": "user", "content": t.messages[-1]["content"]})
        if kept is not None and kept != own:
            msgs.append({"role": "assistant", "content": own,
                         "metadata": {"title": "This side's answer (not kept)", "status": "done"}})
        msgs.append({"role": "assistant", "content": own if kept is None else kept})
    if live is not None:
        msgs.append({"role": "user", "content": live[0]})
        msgs.append({"role": "assistant", "content": live[1] or "…"})
    return msgs


def battle_chats(wb: Workbench, battle_id: int | None) -> tuple[list[dict], list[dict]]:
    """Both panels as stored: what the battle really holds, whatever the browser shows."""
    if battle_id is None:
        return [], []
    rows, carried = battles.turns(wb, battle_id), battles.carried_answers(wb, battle_id)
    return chat_for(rows, "a", carried=carried), chat_for(rows, "b", carried=carried)


def side_labels(wb: Workbench, battle_id: int | None) -> tuple[str, str]:
    """"Model A"/"Model B" while blind; the names once known (a named battle, or any vote)."""
    if battle_id is None:
        return "Model A", "Model B"
    battle = battles.get_battle(wb, battle_id)
    if battle.mode == "anonymous" and battles.vote_for(wb, battle_id, 0) is None:  # votes go in order
        return "Model A", "Model B"
    names = battles.reveal(wb, battle_id)
    return f"A · {names['a']}", f"B · {names['b']}"


def vote_count_text(wb: Workbench) -> str:
    c = preference_export.live_counts(wb)
    return (f"**{c['votes']}** votes so far · **{c['dpo_pairs']}** DPO pairs ready · "
            f"{c['flagged']} flagged")


# Gradio's chatbot always offers a trash button; emptying one side of a battle would let a
# voter judge an answer they cannot see, so the battle panels hide it (and a clear redraws).
BATTLE_CSS = "#chat-a button[aria-label='Clear'], #chat-b button[aria-label='Clear'] {display: none;}"


@dataclass
class BattleUI:
    battle_id: gr.State
    mode: gr.Radio
    model_a: gr.Dropdown
    model_b: gr.Dropdown
    chat_a: gr.Chatbot
    chat_b: gr.Chatbot
    prompt: gr.Textbox
    status: gr.Markdown
    vote_events: list  # each vote button's click, for followers (live counts, leaderboard)


def build_battle(wb: Workbench, voter_mode: bool = False) -> BattleUI:
    battle_id = gr.State(None)
    with gr.Row(visible=not voter_mode):
        mode = gr.Radio([("Anonymous (sampled pair)", "anonymous"), ("Named", "named")],
                        value="anonymous", label="Mode", scale=2)
        model_a = gr.Dropdown(model_choices(wb), label="Model A", visible=False, scale=2)
        model_b = gr.Dropdown(model_choices(wb), label="Model B", visible=False, scale=2)
    with gr.Accordion("Generation settings", open=False, visible=not voter_mode):
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
            max_tokens = gr.Slider(8, 2048, value=256, step=8, label="Max new tokens")
            seed = gr.Number(label="Seed (blank: random; replays a battle)", precision=0)
        system = gr.Textbox(label="System prompt", placeholder="(none)")
        gr.Markdown("Named mode may put one model on both sides: two samples (a seed is drawn if "
                    "blank) for collecting preference pairs; such battles never count on the leaderboard.")
    with gr.Row():
        chat_a = gr.Chatbot(type="messages", label="Model A", height=360, elem_id="chat-a")
        chat_b = gr.Chatbot(type="messages", label="Model B", height=360, elem_id="chat-b")
    with gr.Row():
        prompt = gr.Textbox(label="Your message", placeholder="Ask both models something…", scale=5,
                            elem_id="arena-prompt")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="arena-send")
    with gr.Row():
        buttons = {c: gr.Button(label, interactive=False, elem_id=f"vote-{c}") for c, label in
                   VOTE_LABELS.items()}
        regen = gr.Button("🔁 Regenerate", interactive=False)
        new = gr.Button("🆕 New battle", elem_id="new-battle")
    edit = gr.Textbox(label="Both were bad: write the answer you wanted, then send your next message",
                      visible=False)
    status = gr.Markdown(SHORTCUT_HELP.format(next="new battle"))

    def votes_off():
        return [gr.update(interactive=False)] * (len(buttons) + 1)

    def streaming(bid, stream, text):
        labels = side_labels(wb, bid)
        history, carried = battles.turns(wb, bid), battles.carried_answers(wb, bid)
        for progress in stream:
            live_a = (text, progress.answer_a)
            live_b = (text, progress.answer_b)
            if progress.turn is not None:
                history, carried, live_a, live_b = battles.turns(wb, bid), battles.carried_answers(wb, bid), \
                    None, None
            yield (bid, gr.update(value=chat_for(history, "a", live_a, carried), label=labels[0]),
                   gr.update(value=chat_for(history, "b", live_b, carried), label=labels[1]))

    def on_send(bid, mode_value, a, b, temp, tp, n_tokens, seed_value, sys_prompt, text, edited,
                request: gr.Request):
        who = voter_id(request)
        try:
            index = battles.next_turn(wb, bid) if bid is not None else 0
            # Voters pay for messages; the checks and their wording are the same for everyone.
            with voters.admit_message(wb, who, text, index, metered=voter_mode) as checked:
                if bid is None:
                    # Voters get the arena's defaults, whatever a crafted request sends.
                    gen = GenSettings() if voter_mode else GenSettings(
                        float(temp), float(tp), int(n_tokens), sys_prompt or "",
                        None if seed_value is None else int(seed_value))
                    ids = (None, None) if mode_value == "anonymous" else (a, b)
                    bid = battles.new_battle(wb, *ids, gen=gen, voter=who,
                                           mode="anonymous" if voter_mode else mode_value).id
                stream = battles.stream_turn(wb, bid, checked, edited_answer=edited or None)
                for state, ca, cb in streaming(bid, stream, checked):
                    yield (state, ca, cb, "", "Both models are answering…", gr.update(visible=False),
                           *votes_off())
        except ForgeloopError as e:
            raise UserError(str(e)) from e
        done = [gr.update(interactive=True)] * (len(buttons) + 1)
        yield (bid, gr.skip(), gr.skip(), "", "Read both answers, then vote.", gr.update(visible=False),
               *done)

    def on_regen(bid, request: gr.Request):
        if bid is None:
            raise UserError("send a message first")
        try:
            last = battles.unvoted_turn(wb, bid)
            text = last.messages[-1]["content"]
            with voters.admit_message(wb, voter_id(request), text, last.turn, metered=voter_mode):
                for state, ca, cb in streaming(bid, battles.regenerate(wb, bid), text):
                    yield (state, ca, cb, "Asking both models again…", *votes_off())
        except ForgeloopError as e:
            raise UserError(str(e)) from e
        yield (bid, gr.skip(), gr.skip(), "Read both answers, then vote.",
               *[gr.update(interactive=True)] * (len(buttons) + 1))

    def on_vote(choice: str):
        def handler(bid, request: gr.Request):
            if bid is None:
                raise UserError("send a message first")
            who = voter_id(request)
            try:
                with voters.admit_vote(wb, who, metered=voter_mode):
                    v = battles.vote(wb, bid, choice, voter=who)
                names = battles.reveal(wb, bid)
            except ForgeloopError as e:
                raise UserError(str(e)) from e
            note = f" (flagged: {', '.join(v.flags)})" if v.flags else ""
            carry = ("Write the answer you wanted below; both models continue from it."
                     if choice == "both_bad" else "Both panels now show the answer the next turn builds on.")
            msg = (f"Vote saved{note}. **A** was **{names['a']}**, **B** was **{names['b']}**. {carry} "
                   "Keep chatting with both, or start a new battle.")
            (chat_a_value, chat_b_value), labels = battle_chats(wb, bid), side_labels(wb, bid)
            return (msg, gr.update(value=chat_a_value, label=labels[0]),
                    gr.update(value=chat_b_value, label=labels[1]),
                    gr.update(visible=choice == "both_bad", value=""), *votes_off())
        return handler

    def on_new():
        return (None, gr.update(value=[], label="Model A"), gr.update(value=[], label="Model B"),
                "New battle: type a message.", gr.update(visible=False), *votes_off())

    vote_outputs = [*buttons.values(), regen]
    send_inputs = [battle_id, mode, model_a, model_b, temperature, top_p, max_tokens, seed, system, prompt,
                   edit]
    send_outputs = [battle_id, chat_a, chat_b, prompt, status, edit, *vote_outputs]
    for trigger in (send.click, prompt.submit):
        trigger(on_send, send_inputs, send_outputs, api_name="arena_send" if trigger == send.click
                else False, concurrency_limit=4, concurrency_id="generation")
    regen.click(on_regen, battle_id, [battle_id, chat_a, chat_b, status, *vote_outputs],
                api_name="arena_regenerate", concurrency_limit=4, concurrency_id="generation")
    vote_events = [button.click(on_vote(choice), battle_id, [status, chat_a, chat_b, edit, *vote_outputs],
                                api_name=f"arena_vote_{choice}") for choice, button in buttons.items()]
    new.click(on_new, None, [battle_id, chat_a, chat_b, status, edit, *vote_outputs], api_name="arena_new")
    for chat in (chat_a, chat_b):  # a cleared panel comes back as stored (see BATTLE_CSS)
        chat.clear(lambda bid: battle_chats(wb, bid), battle_id, [chat_a, chat_b], show_api=False)
    mode.change(lambda m: (gr.update(visible=m == "named"),) * 2, mode, [model_a, model_b],
                show_api=False)
    return BattleUI(battle_id, mode, model_a, model_b, chat_a, chat_b, prompt, status, vote_events)


def leaderboard_outputs(wb: Workbench, include_named: bool = False, include_annotations: bool = False):
    view = leaderboard_cache(wb).get(include_named=bool(include_named),
                                     include_annotations=bool(include_annotations))
    table = view.table.copy()
    for col in ("rating", "lower", "upper"):
        table[col] = table[col].round(0)
    pos, length = view.position, view.length
    lines = [f"**{view.votes_used} valid votes.** {describe_exclusions(view.excluded)}", "",
             f"Position bias: the left answer won "
             f"{pos.get('left_win_rate', float('nan')):.0%} of {pos.get('n', 0)} decisive votes. "
             f"Length bias: the longer answer won {length.get('longer_win_rate', float('nan')):.0%} "
             f"of {length.get('n', 0)}.", ""]
    for sep in view.separation:
        need = sep["votes_needed"]
        lines.append(f"- {sep['better']} vs {sep['worse']}: gap {sep['gap']:.0f}; "
                     f"≈{need if need is not None else '∞'} head-to-head votes to separate")
    return (table, heatmap(view.win_rates, "Win rate (row vs column)", ".0%"),
            heatmap(view.counts, "Battles", ".0f"), "\n".join(lines))


def build_leaderboard(wb: Workbench, tab: gr.Tab | None = None) -> tuple[list, list]:
    """The leaderboard; drawn again each time ``tab`` (its tab) is opened, so it shows the
    votes cast since without a click. Returns its (inputs, outputs) for redraws after votes."""
    with gr.Row():
        refresh = gr.Button("Refresh leaderboard", scale=3)
        named = gr.Checkbox(label="Include named battles (voters knew the models)", value=False, scale=2)
        labels = gr.Checkbox(label="Include people's labels from the annotation queue", value=False,
                             scale=2)
    table = Table(label="Bradley–Terry ratings, 95% bootstrap intervals (shared rank = overlap)",
                  interactive=False)
    notes = gr.Markdown()
    with gr.Row():
        wins = gr.Plot(label="Win rates")
        counts = gr.Plot(label="Battle counts")
    outputs = [table, wins, counts, notes]
    refresh.click(lambda inc, lab: leaderboard_outputs(wb, inc, lab), [named, labels], outputs,
                  api_name="leaderboard")
    for box in (named, labels):
        box.change(lambda inc, lab: leaderboard_outputs(wb, inc, lab), [named, labels], outputs,
                   api_name=False)
    if tab is not None:
        tab.select(lambda inc, lab: leaderboard_outputs(wb, inc, lab), [named, labels], outputs,
                   show_api=False)
    return [named, labels], outputs


def _date(text: str, end_of_day: bool = False) -> datetime | None:
    """A typed date; "until 2026-11-22" means up to the end of that day."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise UserError(f"dates look like 2026-11-22, got {text!r}") from e
    return when + timedelta(days=1) if end_of_day and len(text) == 10 else when


def _count_text(wb: Workbench) -> str:
    c = preference_export.live_counts(wb)
    u = preference_export.vote_usage(wb)

    def share(key: str) -> str:
        return f"{u[key]['fraction']:.0%} ({u[key]['examples']} examples)"

    return (f"Live preference data: **{c['votes']}** votes, **{c['dpo_pairs']}** DPO pairs ready, "
            f"{c['flagged']} flagged (excluded by default). Votes each option uses: DPO {share('dpo')} · "
            f"KTO {share('kto')} · every vote {share('every_vote')}."
            + (f" {u['held_out']} votes are on held-out eval prompts and never trained on."
               if u["held_out"] else ""))


def build_exports(wb: Workbench, on_train) -> gr.Markdown:
    counts = gr.Markdown(value=lambda: _count_text(wb))
    with gr.Row():
        since = gr.Textbox(label="Votes since (YYYY-MM-DD)")
        until = gr.Textbox(label="Votes until")
        models = gr.Dropdown(model_choices(wb), multiselect=True, label="Only these models")
        min_votes = gr.Number(value=0, precision=0, label="Min votes per model")
        flagged = gr.Checkbox(label="Include flagged votes")
    name = gr.Textbox(label="Dataset name (optional: a content hash names it)")
    with gr.Row():
        dpo = gr.Button("Build DPO dataset", variant="primary")
        kto = gr.Button("Build KTO dataset (both-bad as negatives)")
        trl = gr.Button("Export TRL preference JSONL")
        train = gr.Button("Train on these votes →")
    ties = gr.Checkbox(label="KTO: ties count as two good answers (use every vote)")
    result = gr.Markdown()
    file = gr.File(label="TRL export", visible=False)
    built = gr.State(None)

    def flt(s, u, ids, n, inc):
        return preference_export.VoteFilter(_date(s), _date(u, end_of_day=True),
                                            [int(i) for i in ids or []] or None,
                                            int(n or 0), bool(inc))

    filters = [since, until, models, min_votes, flagged]

    @user_errors
    def on_dpo(nm, *f):
        ds = preference_export.build_dpo_dataset(wb, (nm or "").strip() or None, flt(*f))
        return f"DPO dataset **{ds.name}**: {ds.num_rows} pairs from {len(ds.meta['vote_ids'])} votes.", ds.id

    @user_errors
    def on_kto(nm, every, *f):
        ds = preference_export.build_kto_dataset(wb, (nm or "").strip() or None, flt(*f),
                                                 ties="good" if every else "skip")
        used = len(ds.meta["vote_ids"])
        return f"KTO dataset **{ds.name}**: {ds.num_rows} examples from {used} votes.", ds.id

    @user_errors
    def on_trl(*f):
        path = wb.settings.datasets_dir / f"trl-preferences-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
        n = preference_export.export_trl_jsonl(wb, path, flt(*f))
        return f"Exported {n} pairs in TRL's format.", gr.update(value=str(path), visible=True)

    dpo.click(on_dpo, [name, *filters], [result, built], api_name="build_dpo_dataset")
    kto.click(on_kto, [name, ties, *filters], [result, built], api_name="build_kto_dataset")
    trl.click(on_trl, filters, [result, file], api_name="export_trl")
    on_train(train, built)
    gr.on([dpo.click, kto.click], lambda: _count_text(wb), None, counts, show_api=False)
    return counts


def build_voter_admin(wb: Workbench) -> None:
    gr.Markdown("People who vote through the shared link (`--share`) sign in with an account or "
                "with any new name plus an invite code as the password.")
    with gr.Row():
        uses = gr.Number(value=10, precision=0, label="Invite uses")
        note = gr.Textbox(label="Note")
        invite = gr.Button("Create invite code")
    with gr.Row():
        user = gr.Textbox(label="Voter name")
        password = gr.Textbox(label="Password", type="password")
        add = gr.Button("Create voter account")
    out = gr.Markdown()

    @user_errors
    def on_invite(n, text):
        inv = voters.create_invite(wb, max_uses=int(n or 1), note=text or "")
        return f"Invite code: `{inv.code}` ({inv.max_uses} uses)."

    @user_errors
    def on_add(u, p):
        acc = voters.create_voter(wb, (u or "").strip(), p or "")
        return f"Voter **{acc.username}** created."

    invite.click(on_invite, [uses, note], out, api_name="create_invite")
    add.click(on_add, [user, password], out, api_name="create_voter")


def build(wb: Workbench, on_train) -> gr.Tab:
    """The workbench's Arena tab. ``on_train(button, dataset_state)`` wires "Train DPO on
    these votes" to the Train tab."""
    with gr.Tab("Arena", id="arena") as tab:
        with gr.Tab("Battle"):
            ui = build_battle(wb)
            tally = gr.Markdown(value=lambda: vote_count_text(wb), elem_id="arena-tally")
            workers_panel.build(wb, "arena", api=False)
        with gr.Tab("Leaderboard") as board_tab:
            board_inputs, board_outputs = build_leaderboard(wb, board_tab)
        with gr.Tab("Votes → data") as data_tab:
            counts = build_exports(wb, on_train)
        with gr.Tab("History"):
            arena_history.build(wb)
        with gr.Tab("Voters"):
            build_voter_admin(wb)
        tab.select(lambda: (gr.update(choices=model_choices(wb)),) * 2, None, [ui.model_a, ui.model_b],
                   show_api=False)
        # Every vote moves the counts and the leaderboard at once: no refresh click.
        for voted in ui.vote_events:
            voted.success(lambda inc, lab: (vote_count_text(wb), _count_text(wb),
                                            *leaderboard_outputs(wb, inc, lab)),
                          board_inputs, [tally, counts, *board_outputs], show_api=False,
                          show_progress="hidden")
        data_tab.select(lambda: _count_text(wb), None, counts, show_api=False)
    return tab
