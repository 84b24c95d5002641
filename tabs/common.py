"""Small helpers shared by the tabs: choices for dropdowns, error display, the A/B keys."""

from __future__ import annotations

import html
import inspect
import json
import time
from collections.abc import Callable, Iterator
from functools import wraps

import gradio as gr

from app.core.errors import ForgeloopError
from app.core.jobs import FINISHED
from app.core.workbench import Workbench
from app.data.datasets import list_datasets
from app.models.registry import is_archived, list_models

# The arena's keys, shared by every blind A/B view (arena battles, the annotation queue):
# 1-4 choose A, B, tie, both bad; N moves on to the next battle or pair.
SHORTCUT_KEYS = {"1": "a", "2": "b", "3": "tie", "4": "both_bad", "n": "next"}
SHORTCUT_HELP = "Keys: **1** A better · **2** B better · **3** tie · **4** both bad · **N** {next}"

_SHORTCUTS_TEMPLATE = """
<script>
(() => {
  const keys = %s;
  const views = %s;
  const usable = (el) => el && !el.disabled && el.getClientRects().length > 0;
  const typing = (t) => t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
    (t.tagName === 'INPUT' && !['radio', 'checkbox', 'button', 'submit'].includes(t.type)));
  document.addEventListener('keydown', (e) => {
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const action = keys[e.key.toLowerCase()];
    for (const view of (action ? views : [])) {
      const steps = view[action] || [];
      const first = steps.length ? document.querySelector(steps[0]) : null;
      if (!usable(first)) continue;  // a view on another tab, or not ready for this key
      first.click();
      steps.slice(1).forEach((sel, i) => setTimeout(() => {
        const el = document.querySelector(sel);
        if (usable(el)) el.click();
      }, 150 * (i + 1)));
      e.preventDefault();
      return;
    }
  });
})();
</script>
"""


def shortcuts_script(*views: dict[str, list[str]]) -> str:
    """A page-head script binding SHORTCUT_KEYS. Each view maps an action (a value of
    SHORTCUT_KEYS) to CSS selectors to click: the first at once, the rest a moment later, once
    the UI has taken in the first (a radio choice before its Save button). A key acts on the
    first view whose first element is on screen and enabled, never while the user types."""
    return _SHORTCUTS_TEMPLATE % (json.dumps(SHORTCUT_KEYS), json.dumps(list(views)))


def model_choices(wb: Workbench, include_archived: bool = False) -> list[tuple[str, int]]:
    """Models for a picker; archived ones only where they can be managed (the Registry tab)."""
    return [(f"{m.name} ({m.kind}{', archived' if is_archived(m) else ''})", m.id)
            for m in list_models(wb, include_archived)]


def dataset_choices(wb: Workbench, kind: str | None = None) -> list[tuple[str, int]]:
    return [(f"{d.name} · {d.kind} · {d.num_rows} rows", d.id) for d in list_datasets(wb, kind)]


class UserError(gr.Error):
    """A user's mistake: its message shows in the UI; the app's log gets no traceback
    (Gradio prints one for a plain gr.Error)."""

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, print_exception=False, **kwargs)


def user_errors(fn: Callable) -> Callable:
    """Show a ForgeloopError as a Gradio error message instead of a stack trace
    (generators too: Gradio must still see a generator function to stream it)."""
    if inspect.isgeneratorfunction(fn):

        @wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ForgeloopError as e:
                raise UserError(str(e)) from e

        return streaming

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ForgeloopError as e:
            raise UserError(str(e)) from e

    return wrapper


def progress_html(view: dict) -> str:
    """The live progress bar of any job view (``JobRunner.view``, ``training.run_view``)."""
    pct = max(0.0, min(100.0, view["percent"]))
    eta = f" · ETA {view['eta']}" if view["status"] == "running" and view["eta"] else ""
    name = html.escape(str(view.get("name") or view.get("title") or f"job {view.get('job_id')}"))
    return (
        f"<div class='fl-progress' data-status='{view['status']}'>"
        f"<b>{name}</b> — <span class='fl-status'>{view['status']}</span> · "
        + (f"{html.escape(str(view['stage']))} · " if view.get("stage") else
           f"step {view['step']}/{view['total_steps']} · ")
        + f"{pct:.0f}%{eta}"
        f"<div style='background:#ddd;border-radius:4px;height:14px'>"
        f"<div style='background:#4a7;width:{pct:.1f}%;height:14px;border-radius:4px'></div>"
        f"</div></div>"
    )


def follow_job(wb: Workbench, job_id: int, every_s: float = 0.5) -> Iterator[dict]:
    """Views of a job while it runs, ending with its final view. Only the watching stops
    when the tab closes; the job goes on."""
    while True:
        view = wb.jobs.view(wb.jobs.get(job_id))
        yield view
        if view["status"] in FINISHED:
            return
        time.sleep(every_s)


def connection_line(result: dict) -> str:
    """A connection test's answer (``app.inference.connection``) in one line."""
    where = f" at {result['endpoint']}" if result.get("endpoint") else ""
    reply = result["reply"] or "(an empty reply: reachable, but check the model's chat template)"
    return f"✓ {result['model']}{where} answered in {result['seconds']:.2f} s: {reply[:120]}"
