"""The Evaluate tab's held-out suites: arena prompts never trained on, or rows split off a
training set. The suite's name, checks and sampling come from the suite form above."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from app.core.workbench import Workbench
from app.evals import checks, heldout
from app.evals.suites import Sampling
from tabs.common import UserError, dataset_choices, user_errors


@dataclass
class SuiteForm:
    """The suite form's fields the held-out section reuses."""

    name: gr.Textbox
    checks: gr.Textbox
    samples: gr.Number
    temperature: gr.Number
    max_tokens: gr.Number
    seed: gr.Number


def build_heldout(wb: Workbench, form: SuiteForm, status: gr.Markdown, suite: gr.Dropdown,
                  choices: Callable[[], list]) -> gr.Dropdown:
    """The section; ``choices`` lists suites for ``suite``. Returns its dataset picker."""
    with gr.Accordion("Hold out prompts (never trained on)", open=False, elem_id="eval-heldout-section"):
        gr.Markdown("Take prompts aside before anything trains on them, using the name, checks and "
                    "sampling above. From the arena: prompts of battles none of whose votes went into a "
                    "vote dataset yet; votes on them stay out of every DPO/KTO dataset from then on. From "
                    "an SFT dataset: rows split off into the suite, the rest saved as `NAME-train`.")
        with gr.Row():
            count = gr.Number(label="How many prompts", value=50, precision=0, minimum=1)
            draw = gr.Number(label="Draw seed", value=0, precision=0, minimum=0)
            from_battles = gr.Button("Hold out arena prompts")
        with gr.Row():
            data = gr.Dropdown(dataset_choices(wb, "sft"), label="SFT dataset to split", scale=3)
            from_data = gr.Button("Split it off the dataset")

    def fields(nm, check_lines, n, temp, tokens, seed_value):
        sampling = Sampling(int(n or 1), float(temp or 0), int(tokens or 128),
                            None if seed_value is None else int(seed_value))
        return (nm or "").strip(), checks.parse_checks(check_lines or ""), sampling

    @user_errors
    def on_battles(nm, check_lines, n, temp, tokens, seed_value, how_many, draw_seed):
        name, found, sampling = fields(nm, check_lines, n, temp, tokens, seed_value)
        saved = heldout.suite_from_battles(wb, name, int(how_many or 0), int(draw_seed or 0), found, sampling)
        return (f"Held out **{len(saved.prompts)}** arena prompts as **{saved.name} v{saved.version}**; "
                "votes on them will not be trained on.", gr.update(choices=choices(), value=saved.id),
                gr.skip())

    @user_errors
    def on_split(nm, check_lines, n, temp, tokens, seed_value, how_many, draw_seed, dataset_id):
        if dataset_id is None:
            raise UserError("choose the SFT dataset to split")
        name, found, sampling = fields(nm, check_lines, n, temp, tokens, seed_value)
        saved, train = heldout.suite_from_dataset_split(wb, int(dataset_id), name, int(how_many or 0),
                                                        int(draw_seed or 0), found, sampling)
        return (f"Split **{len(saved.prompts)}** prompts into **{saved.name} v{saved.version}**; train on "
                f"**{train.name}** ({train.num_rows} rows) instead.",
                gr.update(choices=choices(), value=saved.id), gr.update(choices=dataset_choices(wb, "sft")))

    inputs = [form.name, form.checks, form.samples, form.temperature, form.max_tokens, form.seed, count, draw]
    from_battles.click(on_battles, inputs, [status, suite, data], api_name="suite_from_battles")
    from_data.click(on_split, [*inputs, data], [status, suite, data], api_name="suite_from_dataset")
    return data
