"""Registry tab: every model version in full (lineage, rating, size, deployments), two compared
side by side; the starter model for new users."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.arena.leaderboard import leaderboard_cache
from app.core.workbench import Workbench
from app.evals.scores import latest_scores_in, score_text
from app.inference.remote_engines import ollama_health
from app.inference.workers import worker_pool
from app.models import export, hub, registry
from app.models.card import model_card
from app.train import quickstart, training
from tabs import registry_deploy, workers_panel
from tabs.common import UserError, follow_job, model_choices, progress_html, user_errors
from tabs.table import Table, to_frame
from tabs.version_panel import build_compare, show_version

if TYPE_CHECKING:
    import pandas as pd


def all_models(wb: Workbench) -> list[tuple[str, int]]:
    """The Registry tab manages archived versions too."""
    return model_choices(wb, include_archived=True)

MODEL_COLUMNS = ["id", "name", "kind", "parent", "run", "arena", "loaded", "rating", "gate", "eval scores",
                 "template", "tags", "where"]


def models_frame(wb: Workbench) -> pd.DataFrame:
    models = registry.list_models(wb)
    names = {m.id: m.name for m in models}
    run_names = {r.id: r.name for r in training.list_runs(wb)}
    loaded = {r.model_id for r in worker_pool(wb).rows()}
    with wb.session() as s:
        found = latest_scores_in(s, [m.id for m in models])
    board = leaderboard_cache(wb).get().table
    rated = {r.model: f"{r.rating:.0f} [{r.lower:.0f}, {r.upper:.0f}]" for r in board.itertuples() if r.votes}
    rows = [
        {"id": m.id, "name": m.name, "kind": m.kind, "parent": names.get(m.parent_id, ""),
         "run": run_names.get(m.run_id, ""), "arena": "yes" if m.in_arena else "",
         "loaded": "yes" if m.id in loaded else "",
         "rating": rated.get(m.name, ""),
         "gate": ((m.meta or {}).get("gate") or {}).get("status", ""),
         "eval scores": "; ".join(score_text(x) for x in found[m.id]),
         "template": m.template,
         "tags": ", ".join((m.meta or {}).get("tags", []))
         + (" (archived)" if registry.is_archived(m) else ""),
         "where": (m.meta or {}).get("endpoint", "") + (" · " if m.kind in ("ollama", "openai") else "")
         + (m.adapter_path.split(",")[-1] if m.adapter_path else m.base_path)}
        for m in models
    ]
    return to_frame(rows, MODEL_COLUMNS)


def token_text(wb: Workbench) -> str:
    """Whether Hub jobs have a token and from where; never the token."""
    where = {"ui": "set in this session", "env": "from HF_TOKEN"}
    state = hub.token_status(wb)
    return (f"Hub token: {where[state['source']]}." if state["set"]
            else "No Hub token: enter one to push (and to pull private or gated models).")


def build(wb: Workbench) -> gr.Tab:
    with gr.Tab("Registry", id="registry") as tab:
        empty = not registry.list_models(wb)
        with gr.Group(visible=empty, elem_id="start-here") as starter_box:
            gr.Markdown(
                "### Start here\n"
                "Forgeloop turns votes into better models: **train** a version on your data, let two "
                "versions answer side by side in the **Arena**, and train the next version on the votes "
                "(DPO), proven better by **Evaluate** before it is deployed.\n\n"
                "No models yet. **Create starter model** builds a tiny Llama here from the corpus in "
                "`data/` as a background job (the bar shows how far it is: about 10 seconds on an idle "
                "2-core machine, a minute or more on a busy one), so every tab can be tried at once; or "
                "register your own base model below."
            )
            starter = gr.Button("Create starter model", variant="primary", elem_id="starter-create")
            starter_progress = gr.HTML()
        with gr.Group(visible=False, elem_id="starter-next") as next_box:
            gr.Markdown("**Next:** fine-tune the starter on the sample chat data (SFT, a background run of "
                        "about 30 s on an idle 2-core CPU; follow it in the Train tab). Its result joins "
                        "the arena, so the first battle is the starter against its fine-tune.")
            starter_sft = gr.Button("Fine-tune the starter on the sample data", elem_id="starter-sft")
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="qwen2.5-0.5b")
            path = gr.Textbox(label="Local folder or Hub id", placeholder="/models/Qwen2.5-0.5B")
            template = gr.Textbox(label="Template (optional)", placeholder="from the tokenizer")
            add = gr.Button("Register base model")
        with gr.Accordion("Add a model served elsewhere (Ollama, OpenAI-compatible)", open=False):
            with gr.Row():
                r_name = gr.Textbox(label="Name", placeholder="llama3.2-ollama")
                r_kind = gr.Dropdown([("Ollama", "ollama"), ("OpenAI-compatible", "openai")],
                                     value="ollama", label="Server")
                r_url = gr.Textbox(label="URL", placeholder="http://127.0.0.1:11434 or http://host:8000/v1")
                r_model = gr.Textbox(label="Model on the server", placeholder="llama3.2:1b")
                r_key = gr.Textbox(label="API key (optional)", type="password")
            add_remote = gr.Button("Register served model")
        status = gr.Markdown()
        table = Table(value=lambda: models_frame(wb), headers=MODEL_COLUMNS, label="Models",
                      interactive=False,
                      column_widths=["4%", "15%", "6%", "10%", "5%", "6%", "6%", "8%", "10%", "30%"])
        with gr.Row():
            target = gr.Dropdown(all_models(wb), label="Model")
            arena_on = gr.Button("Put in arena")
            arena_off = gr.Button("Take out of arena")
            unload = gr.Button("Unload from memory")
            delete = gr.Button("Delete", variant="stop")
        workers_panel.build(wb, "registry")
        with gr.Row():
            ollama_state = gr.Markdown()
            check_ollama = gr.Button("Check Ollama", scale=0)
        with gr.Accordion("Rename, tag, notes, archive, system prompt of the chosen model", open=False):
            with gr.Row():
                new_name = gr.Textbox(label="New name (empty: keep)")
                tags = gr.Textbox(label="Tags, comma-separated (empty: keep)")
                archived = gr.Radio([("keep", "keep"), ("archive", "archive"), ("restore", "restore")],
                                    value="keep", label="Archive (hidden from pickers, kept on disk)")
            notes = gr.Textbox(label="Notes (empty: keep)", lines=2)
            with gr.Row():
                system_prompt = gr.Textbox(
                    label="System prompt (empty: keep)", lines=2, scale=4,
                    info="Used by the arena's chat when none is given, as training's default_system "
                         "and as an Ollama deployment's SYSTEM; without one the template's default applies.")
                clear_system = gr.Checkbox(label="Clear the system prompt", value=False, scale=1)
            backend = gr.Dropdown(["keep", *registry.WORKER_BACKENDS], value="keep",
                                  label="Worker backend (local models; auto: vLLM or SGLang on a GPU where "
                                        "installed, else huggingface)")
            save = gr.Button("Save changes")
        with gr.Accordion("Export the chosen model (merge adapters, GGUF)", open=False):
            with gr.Row():
                merge_name = gr.Textbox(label="Merged version's name", placeholder="<model>-merged")
                merge_dtype = gr.Dropdown(list(export.DTYPES), value="float32", label="dtype")
                merge = gr.Button("Merge adapters")
            with gr.Row():
                gguf_type = gr.Dropdown(list(export.GGUF_TYPES), value="f16", label="GGUF type")
                to_gguf = gr.Button("Convert to GGUF")
            export_progress = gr.HTML()
        registry_deploy.build(wb, target, status, table,
                              lambda: (models_frame(wb), gr.update(choices=all_models(wb))))
        with gr.Accordion("Hugging Face Hub (push the chosen model, pull a base model)", open=False):
            token_state = gr.Markdown(lambda: token_text(wb))
            with gr.Row():
                token = gr.Textbox(label="Access token (kept in memory until Forgeloop stops)",
                                   type="password", placeholder="hf_…", scale=4)
                set_token = gr.Button("Use this token", scale=1)
            with gr.Row():
                push_repo = gr.Textbox(label="Push to repo", placeholder="my-org/my-model", scale=3)
                push_gguf = gr.Checkbox(label="with its GGUF files", value=False)
                push_private = gr.Checkbox(label="private repo", value=True)
                push = gr.Button("Push the chosen model")
            with gr.Row():
                pull_repo = gr.Textbox(label="Pull a base model", placeholder="Qwen/Qwen2.5-0.5B-Instruct",
                                       scale=3)
                pull_name = gr.Textbox(label="Name (optional)", placeholder="from the repo")
                pull_revision = gr.Textbox(label="Revision (optional)", placeholder="main")
                pull_template = gr.Textbox(label="Template (optional)", placeholder="from the tokenizer")
                pull = gr.Button("Pull")
            hub_progress = gr.HTML()
        with gr.Row():
            # No default: a version looks chosen only once its view is shown.
            pick = gr.Dropdown(all_models(wb), value=None, label="Show version", scale=4)
            show_card = gr.Button("Model card")
        detail = gr.Markdown()
        card = gr.Code(label="Model card (README.md)", language="markdown", interactive=False)
        compare_a, compare_b = build_compare(wb, all_models(wb))

        @user_errors
        def on_starter():
            """Queue the build and follow it; closing the tab does not stop the job."""
            job = registry.start_starter_build(wb)
            for view in follow_job(wb, job.id):
                note = f"Building the starter model (job #{job.id})…"
                yield note, gr.skip(), gr.skip(), progress_html(view), gr.skip(), gr.skip(), gr.skip()
            if view["status"] != "succeeded":
                raise UserError(f"building the starter model {view['status']}: {view['error']}")
            mv = registry.get_model(wb, view["result"]["model_id"])
            choices = gr.update(choices=all_models(wb))  # the pickers below learn the new model
            yield (f"Created **{mv.name}** ({mv.meta['starter']['params']:,} parameters).",
                   models_frame(wb), gr.update(visible=False), progress_html(view), choices, choices,
                   gr.update(visible=True))

        @user_errors
        def on_starter_sft():
            run = quickstart.start_starter_sft(wb)
            return (f"Run **{run.name}** submitted: the starter trains on the sample data; watch it in the "
                    "Train tab.", gr.update(visible=False))

        def follow_export(job, done):
            """Follow an export job; ``done(result)`` words the success."""
            for view in follow_job(wb, job.id):
                yield f"{job.title} (job #{job.id})…", progress_html(view), gr.skip(), gr.skip(), gr.skip()
            if view["status"] != "succeeded":
                raise UserError(f"{job.title} {view['status']}: {view['error']}")
            choices = gr.update(choices=all_models(wb))
            yield done(view["result"]), progress_html(view), models_frame(wb), choices, choices

        @user_errors
        def on_merge(model_id, new_name, dtype):
            job = export.start_merge(wb, need(model_id), (new_name or "").strip() or None, dtype)
            def done(res):
                return f"Merged into **{registry.get_model(wb, res['model_id']).name}** at `{res['path']}`."

            yield from follow_export(job, done)

        @user_errors
        def on_gguf(model_id, outtype):
            job = export.start_gguf(wb, need(model_id), outtype)
            def done(res):
                return f"Wrote a {res['type']} GGUF of {res['bytes'] / 2**20:.1f} MiB at `{res['path']}`."

            yield from follow_export(job, done)

        @user_errors
        def on_set_token(value):
            hub.set_hub_token(wb, value)
            return token_text(wb), ""  # the box forgets it at once

        @user_errors
        def on_push(model_id, repo_id, with_gguf, private):
            job = hub.start_push(wb, need(model_id), repo_id, bool(with_gguf), bool(private))
            def done(res):
                return (f"Pushed {len(res['files'])} files to [{res['repo_id']}]({res['url']}) "
                        f"(commit `{(res.get('commit') or '')[:10]}`).")

            yield from follow_export(job, done)

        @user_errors
        def on_pull(repo_id, name_, revision, template_):
            job = hub.start_pull(wb, repo_id, name_, revision, template_)
            def done(res):
                mv = registry.get_model(wb, res["model_id"])
                return (f"Pulled {res['repo_id']} ({len(res['files'])} files) as **{mv.name}** "
                        f"(template {mv.template}, {mv.meta.get('template_source', 'default')}).")

            yield from follow_export(job, done)

        @user_errors
        def on_add(n, p, t):
            mv = registry.register_base_model(wb, n.strip(), p, t.strip() or None)
            source = (mv.meta or {}).get("template_source", "default")
            return f"Registered **{mv.name}** (template {mv.template}, {source}).", models_frame(wb)

        @user_errors
        def on_remote(n, kind, url, model, key):
            mv = registry.register_remote_model(wb, (n or "").strip(), kind, url, model, key or None)
            return f"Registered **{mv.name}** ({kind} at {mv.meta['endpoint']}).", models_frame(wb)

        def need(model_id):
            if model_id is None:
                raise UserError("choose a model first")
            return int(model_id)

        @user_errors
        def on_arena(model_id, flag):
            mv = registry.set_in_arena(wb, need(model_id), flag)
            return f"**{mv.name}** is {'in' if flag else 'out of'} the arena.", models_frame(wb)

        @user_errors
        def on_unload(model_id):
            done = worker_pool(wb).unload(need(model_id))
            return ("Unloaded." if done else "It was not loaded."), models_frame(wb)

        @user_errors
        def on_delete(model_id):
            registry.delete_model(wb, need(model_id))
            worker_pool(wb).unload(int(model_id))  # its files are gone now
            return "Deleted.", models_frame(wb)

        add_remote.click(on_remote, [r_name, r_kind, r_url, r_model, r_key], [status, table],
                         api_name="register_served_model")
        arena_on.click(lambda i: on_arena(i, True), target, [status, table], api_name="arena_on")
        arena_off.click(lambda i: on_arena(i, False), target, [status, table], api_name="arena_off")
        unload.click(on_unload, target, [status, table], api_name="unload_model")
        delete.click(on_delete, target, [status, table], api_name="delete_model")
        starter_sft.click(on_starter_sft, None, [status, next_box], api_name="starter_sft")
        starter.click(on_starter, None,
                      [status, table, starter_box, starter_progress, target, pick, next_box],
                      api_name="create_starter")
        add.click(on_add, [name, path, template], [status, table], api_name="register_model")
        export_outs = [status, export_progress, table, target, pick]
        merge.click(on_merge, [target, merge_name, merge_dtype], export_outs, api_name="merge_model")
        to_gguf.click(on_gguf, [target, gguf_type], export_outs, api_name="convert_to_gguf")
        pick.change(user_errors(lambda i: show_version(wb, i)), pick, detail, api_name="version_view")
        set_token.click(on_set_token, token, [token_state, token], api_name="set_hub_token")
        hub_outs = [status, hub_progress, table, target, pick]
        push.click(on_push, [target, push_repo, push_gguf, push_private], hub_outs, api_name="push_to_hub")
        pull.click(on_pull, [pull_repo, pull_name, pull_revision, pull_template], hub_outs,
                   api_name="pull_from_hub")

        @user_errors
        def on_card(model_id):
            with wb.session() as s:
                return model_card(s, need(model_id))

        show_card.click(on_card, pick, card, api_name="model_card")

        def on_check_ollama():
            health = ollama_health(wb.settings.ollama_host)
            if health["ok"]:
                return f"Ollama {health['version']} answers at `{health['host']}`."
            return f"⚠️ {health['error']} (set `--ollama-host` or `OLLAMA_HOST`)."

        check_ollama.click(on_check_ollama, None, ollama_state, api_name="check_ollama")

        @user_errors
        def on_save(model_id, name_, tags_, archive_, notes_, system_, clear_system_, backend_="keep"):
            mv = registry.edit_model(
                wb, need(model_id), name=(name_ or "").strip() or None,
                tags=[x for x in tags_.split(",")] if (tags_ or "").strip() else None,
                notes=notes_ if (notes_ or "").strip() else None,
                archived={"archive": True, "restore": False}.get(archive_),
                system_prompt="" if clear_system_ else (system_ if (system_ or "").strip() else None),
                worker_backend=None if backend_ in (None, "keep") else backend_)
            choices = gr.update(choices=all_models(wb))
            system = registry.model_system_prompt(mv)
            note = f" System prompt: {len(system):,} characters." if system else " No own system prompt."
            return f"Saved **{mv.name}**.{note}", models_frame(wb), choices, choices

        save.click(on_save, [target, new_name, tags, archived, notes, system_prompt, clear_system, backend],
                   [status, table, target, pick], api_name="edit_model")
        pickers = [pick, target, compare_a, compare_b]
        tab.select(lambda: (models_frame(wb), gr.update(visible=not registry.list_models(wb)),
                            *[gr.update(choices=all_models(wb))] * len(pickers)),
                   None, [table, starter_box, *pickers], show_api=False)
    return tab
