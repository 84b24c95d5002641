"""Chat tab: talk to one model (local or served) with the generation settings and a system
prompt; stop an answer; keep a good conversation as an SFT example or battle with it."""

from __future__ import annotations

import gradio as gr

from app.arena import playground
from app.core.workbench import Workbench
from app.inference.generation import Finish, GenSettings
from tabs.common import UserError, model_choices, user_errors


def build(wb: Workbench) -> gr.Tab:
    with gr.Tab("Chat", id="chat") as tab:
        with gr.Row():
            model = gr.Dropdown(model_choices(wb), label="Chat with", scale=3, elem_id="chat-model")
            temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
            max_tokens = gr.Slider(1, 2048, value=256, step=1, label="Max new tokens")
        system = gr.Textbox(label="System prompt (empty: the model's own, else its template's)", lines=2)
        chat = gr.Chatbot(type="messages", label="Conversation", height=360, elem_id="chat-log")
        with gr.Row():
            prompt = gr.Textbox(label="Message", scale=5, elem_id="chat-prompt",
                                placeholder="Type a message and press Enter")
            send = gr.Button("Send", variant="primary", elem_id="chat-send")
            stop = gr.Button("Stop", elem_id="chat-stop")
            clear = gr.Button("Clear")
        with gr.Row():
            dataset = gr.Textbox(label="Dataset for examples", value="playground-examples", scale=2)
            save = gr.Button("Save as an SFT example", elem_id="chat-save")
            to_arena = gr.Button("Battle with this opening message")
        status = gr.Markdown(elem_id="chat-status")

    def settings(t, p, n, s) -> GenSettings:
        return GenSettings(float(t), float(p), int(n), s or "")

    @user_errors
    def on_send(model_id, message, history, t, p, n, s):
        if model_id is None:
            raise UserError("choose a model first")
        if not (message or "").strip():
            raise UserError("type a message first")
        history = [*(history or []), {"role": "user", "content": message}]
        turns = [{"role": m["role"], "content": m["content"]} for m in history]
        answer = {"role": "assistant", "content": ""}
        note = ""
        yield history, "", "…"  # the message shows at once; a local model may still be loading
        for piece in playground.chat_stream(wb, int(model_id), turns, settings(t, p, n, s)):
            if isinstance(piece, Finish):
                note = "Stopped at the token limit." if piece.reason == "length" else ""
                continue
            answer["content"] += piece
            yield [*history, answer], "", ""
        yield [*history, answer], "", note

    def plain(history) -> list[dict]:
        return [{"role": m["role"], "content": m["content"]} for m in history or []]

    @user_errors
    def on_save(history, name, s):
        ds = playground.save_example(wb, plain(history), name, s or "")
        return f"Saved to dataset **{ds.name}** ({ds.num_rows} rows)."

    @user_errors
    def on_arena(model_id, history, t, p, n, s):
        if model_id is None:
            raise UserError("choose a model first")
        battle = playground.to_arena(wb, int(model_id), plain(history), settings(t, p, n, s))
        return f"Battle **#{battle.id}** played on the opening message: see it in the Arena."

    inputs = [model, prompt, chat, temperature, top_p, max_tokens, system]
    sending = send.click(on_send, inputs, [chat, prompt, status], api_name="chat")
    submitting = prompt.submit(on_send, inputs, [chat, prompt, status], show_api=False)
    stop.click(None, None, None, cancels=[sending, submitting], show_api=False)
    clear.click(lambda: ([], ""), None, [chat, status], show_api=False)
    save.click(on_save, [chat, dataset, system], status, api_name="save_chat_example")
    to_arena.click(on_arena, [model, chat, temperature, top_p, max_tokens, system], status,
                   api_name="chat_to_arena")
    tab.select(lambda: gr.update(choices=model_choices(wb)), None, model, show_api=False)
    return tab
