"""An Ollama chat format (Modelfile TEMPLATE, stop parameters, SYSTEM) for a model version,
generated from the LLaMA-Factory template it was trained with.

The TEMPLATE is translated mechanically from the LLaMA-Factory ``Template``'s formatter
slots, never from a per-family table: the prefix, the system block, one branch per user
and assistant message (user slots end with the assistant header, so the prompt ends
with the generation prompt) and, for templates that fold the system prompt into the
first user message (``Llama2Template``: llama2, mistral, gemma…), that fold. Special-token
slots (``{"bos_token"}``, ``{"eos_token"}``) become the tokenizer's token text after
LLaMA-Factory's own ``fix_special_tokens``, as in training.

Ollama renders a chat with ``System`` (every system message joined) and ``Messages``
(system messages included, consecutive same-role messages merged); a Modelfile SYSTEM is
added as the first message when a request has none. The template therefore renders
``.System`` once at the top and skips system messages in its loop. The result matches
what ``Template.encode_oneturn`` builds for training and LLaMA-Factory's chat, and what
the model's own ``apply_chat_template`` renders (tests/test_ollama_template.py checks both
byte for byte through Go's text/template). Known differences: a request whose system
message is empty gets no system block here, where LLaMA-Factory falls back to the
default system prompt; tool and function messages are not rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidInput

if TYPE_CHECKING:
    from app.core.tables import ModelVersion

# LLaMA-Factory templates whose TEMPLATE the tests prove equal to the template's own
# rendering: plain chat templates, no thinking, images or token-id slots.
SUPPORTED_OLLAMA_TEMPLATES: tuple[str, ...] = (
    "default", "alpaca", "vicuna", "chatml", "qwen", "qwen3_nothink", "llama2", "mistral",
    "llama3", "gemma", "phi", "zephyr",
    "bailing", "bailing_v2", "breeze", "chatml_de", "cohere", "cpm4", "dbrx", "deepseek",
    "deepseek3", "deepseekcoder", "empty", "ernie", "ernie_nothink", "exaone", "falcon",
    "falcon_h1", "fewshot", "gemma2", "glm4", "granite3", "granite4", "hunyuan",
    "hunyuan_small", "index", "intern2", "lfm2", "llama2_zh", "minimax1", "ministral",
    "moonlight", "olmo", "openchat", "openchat-3.6", "opencoder", "phi4", "phi4_mini",
    "sailor", "seed_coder", "smollm", "smollm2", "solar", "starchat", "telechat2",
    "xuanyuan", "yi",
)


@dataclass(frozen=True)
class OllamaChatFormat:
    """What a Modelfile needs: ``TEMPLATE``, one ``PARAMETER stop`` per entry, ``SYSTEM``."""

    template: str
    stop: list[str]
    system: str | None
    # True when the tokenizer adds a BOS (so Ollama's runner puts one before every prompt)
    # but the LLaMA-Factory template starts without one: a TEMPLATE cannot take it away;
    # only a GGUF with tokenizer.ggml.add_bos_token = false would match training exactly.
    extra_bos: bool = False


def ollama_format(mv: ModelVersion, runner_adds_bos: bool | None = None) -> OllamaChatFormat:
    """The chat format of a local model version, with its own system prompt if it has one.
    The tokenizer is the root weights folder's (adapters use their base's tokenizer)."""
    from app.models.registry import model_system_prompt

    if mv.kind in ("ollama", "openai"):
        raise InvalidInput(f"model {mv.name!r} is served by {mv.kind}; it has no local tokenizer "
                           "to build an Ollama template from")
    return ollama_format_for(mv.template, mv.base_path, model_system_prompt(mv) or None, runner_adds_bos)


def ollama_format_for(template_name: str, model_dir: Path | str, system: str | None = None,
                      runner_adds_bos: bool | None = None) -> OllamaChatFormat:
    """The chat format for LLaMA-Factory template ``template_name`` with the tokenizer in
    ``model_dir``. ``system`` is the model's own system prompt; without one the template's
    default system prompt is used (``None`` when that is empty too). ``runner_adds_bos`` is
    the GGUF's ``add_bos_token`` when known (the export aligns it with the template, see
    gguf_meta); else what the tokenizer does, which a plain conversion copies."""
    template = _template(template_name)
    tokenizer = _load_tokenizer(template_name, model_dir)
    # Training and LLaMA-Factory's chat see the tokenizer after this (eos replaced by the
    # template's first stop word, stop words added); an exported model already has it.
    template.fix_special_tokens(tokenizer)
    adds_bos = _adds_bos(tokenizer) if runner_adds_bos is None else runner_adds_bos
    parts = {name: _pieces(getattr(template, f"format_{name}").slots, tokenizer, template_name)
             for name in ("prefix", "system", "user", "assistant")}
    fused = type(template).__name__ == "Llama2Template"
    system_slots = template.format_system.slots
    if fused and (len(system_slots) != 1 or not isinstance(system_slots[0], str)):
        raise InvalidInput(f"template {template_name!r} cannot be expressed as an Ollama TEMPLATE: "
                           "its system slot is not a single string")
    stop = []
    for word in [*template.stop_words, tokenizer.eos_token]:
        if word and word not in stop:
            stop.append(word)
    return OllamaChatFormat(
        template=_go_template(parts, fused, adds_bos),
        stop=stop,
        system=system if system and system.strip() else template.default_system or None,
        extra_bos=adds_bos and not _always_starts_with_bos(parts, fused),
    )


# -- checks ------------------------------------------------------------------------------------------------


def _template(name: str) -> Any:
    from llamafactory.data.template import TEMPLATES

    if name not in TEMPLATES:
        raise InvalidInput(f"LLaMA-Factory has no chat template named {name!r}")
    template = TEMPLATES[name]
    if name not in SUPPORTED_OLLAMA_TEMPLATES:
        why = _unsupported_reason(template) or "it has not been verified against Ollama's renderer"
        raise InvalidInput(f"template {name!r} cannot be expressed as an Ollama TEMPLATE: {why}. "
                           f"Forgeloop emits these: {', '.join(SUPPORTED_OLLAMA_TEMPLATES)}")
    return template


def _unsupported_reason(template: Any) -> str | None:
    """Why a LLaMA-Factory template has no faithful Go TEMPLATE, or None."""
    kind = type(template).__name__
    if kind not in ("Template", "Llama2Template"):
        return f"it is a {kind} (thinking/reasoning output)"
    plugin = type(template.mm_plugin).__name__
    if plugin != "BasePlugin":
        return f"it is a multimodal template ({plugin})"
    for part in ("prefix", "system", "user", "assistant"):
        formatter = getattr(template, f"format_{part}")
        if type(formatter).__name__ not in ("StringFormatter", "EmptyFormatter"):
            return f"its {part} part is a {type(formatter).__name__}"
        for slot in formatter.slots:
            if isinstance(slot, dict):
                return f"its {part} part names tokens by id ({slot})"
            if isinstance(slot, set) and not (slot and slot <= {"bos_token", "eos_token"}):
                return f"its {part} part holds the special-token set {slot}"
    return None


def _load_tokenizer(template_name: str, model_dir: Path | str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as e:  # missing folder, no tokenizer files, Hub id not cached offline
        raise InvalidInput(f"cannot load the tokenizer in {model_dir} for template {template_name!r}: "
                           f"{type(e).__name__}: {e}") from e


def _adds_bos(tokenizer: Any) -> bool:
    """Whether encoding text adds a BOS by itself. The GGUF converter records this as
    tokenizer.ggml.add_bos_token, and Ollama's runner (llama.cpp or its own tokenizer)
    then puts a BOS before every prompt: a leading BOS in the TEMPLATE would double it."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0] == tokenizer.bos_token_id


# -- translation -------------------------------------------------------------------------------------------

# A piece of rendered text: ("text", s), ("content", "") where the message goes, or
# ("bos", s): the BOS token's text, left out where it would open the prompt.
Piece = tuple[str, str]


def _pieces(slots: list[Any], tokenizer: Any, name: str) -> list[Piece]:
    """Formatter slots → pieces, resolving special-token slots as LLaMA-Factory's encoder does."""
    out: list[Piece] = []
    for slot in slots:
        if isinstance(slot, str):
            # StringFormatter fills the first {{content}} of each slot only.
            before, hit, after = slot.partition("{{content}}")
            out += [("text", before)] if before else []
            out += [("content", "")] if hit else []
            out += [("text", after)] if after else []
        elif isinstance(slot, set) and slot and slot <= {"bos_token", "eos_token"}:
            if "bos_token" in slot:
                if tokenizer.bos_token_id is not None:
                    out.append(("bos", tokenizer.bos_token))
            elif tokenizer.eos_token_id is not None:
                out.append(("text", tokenizer.eos_token))
        else:
            raise InvalidInput(f"template {name!r} cannot be expressed as an Ollama TEMPLATE: slot {slot!r}")
    return out


def go_text(text: str) -> str:
    """Literal text for a Go template: a '{' that would open an action with the next
    character (or with the action that follows the text) is written as an action."""
    return "".join('{{ "{" }}' if ch == "{" and text[i + 1:i + 2] in ("{", "") else ch
                   for i, ch in enumerate(text))


def _emit(pieces: list[Piece], content: str, bos_guard: str | None = None) -> str:
    """Go template text for ``pieces``; ``content`` is the action for the message text.
    A leading BOS is written only when ``bos_guard`` (a Go condition) holds, if given."""
    out = []
    for i, (kind, text) in enumerate(pieces):
        if kind == "content":
            out.append(content)
        elif kind == "bos" and i == 0 and bos_guard is not None:
            out.append(f"{{{{ if {bos_guard} }}}}{go_text(text)}{{{{ end }}}}")
        else:
            out.append(go_text(text))
    return "".join(out)


def _go_template(parts: dict[str, list[Piece]], fused: bool, adds_bos: bool) -> str:
    prefix, system, user, assistant = (parts[k] for k in ("prefix", "system", "user", "assistant"))
    # Nothing is written before the prefix, before the system block when the prefix is
    # empty, or before the first message when neither wrote anything: a BOS there is the
    # one Ollama's runner adds already.
    if adds_bos and prefix[:1] and prefix[0][0] == "bos":
        prefix = prefix[1:]
        started = True
    else:
        started = bool(prefix)
    if adds_bos and not started and not fused and system[:1] and system[0][0] == "bos":
        system = system[1:]
    guard = None
    if adds_bos and not started and any(p[:1] and p[0][0] == "bos" for p in (user, assistant)):
        guard = "not $first" if fused else "or (not $first) $.System"
    out = [_emit(prefix, "")]
    if not fused:
        out.append(f"{{{{ if .System }}}}{_emit(system, '{{ .System }}')}{{{{ end }}}}")
    uses_first = fused or guard is not None
    if uses_first:
        out.append("{{ $first := true }}")
    user_content = "{{ .Content }}"
    if fused:  # LLaMA-Factory's Llama2Template: system text + first message, in the user slot
        folded = _emit(system, "{{ $.System }}")
        user_content = f"{{{{ if and $first $.System }}}}{folded}{{{{ end }}}}{user_content}"
    seen = "{{ $first = false }}" if uses_first else ""
    out.append(
        '{{ range .Messages }}{{ if eq .Role "user" }}'
        f"{_emit(user, user_content, guard)}{seen}"
        '{{ else if eq .Role "assistant" }}'
        f"{_emit(assistant, '{{ .Content }}', guard)}{seen}"
        "{{ end }}{{ end }}"
    )
    return "".join(out)


def _always_starts_with_bos(parts: dict[str, list[Piece]], fused: bool) -> bool:
    """Whether LLaMA-Factory's rendering opens with a BOS, with or without a system prompt."""
    def opens(pieces: list[Piece]) -> bool:
        return bool(pieces) and pieces[0][0] == "bos"

    if parts["prefix"]:
        return opens(parts["prefix"])
    if fused:
        return opens(parts["user"])
    return opens(parts["system"]) and opens(parts["user"])
