"""The Ollama chat format generated from a model's LLaMA-Factory template, checked byte for byte
with Go's own text/template (tests/gotmpl) against the model's own chat template and
LLaMA-Factory's training-time encoding; and the per-model system prompt end to end."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from app.core.errors import InvalidInput
from app.inference.chat_engines import model_engines
from app.inference.generation import GenSettings
from app.models import registry
from app.models.ollama_template import SUPPORTED_OLLAMA_TEMPLATES, go_text, ollama_format, ollama_format_for
from tests import gotmpl

SYSTEM = "Be brief. Don't ramble; say \"no\" if unsure."
OWN_SYSTEM = "You are the starter model. Answer in one line."
HELLO = [{"role": "user", "content": "Hello there, how are you?"}]
THREE = HELLO + [
    {"role": "assistant", "content": "Fine, thanks."},
    {"role": "user", "content": "What is {{ .System }} 2+2?\nTell me {in braces}."},
    {"role": "assistant", "content": "4, I'd say.\n"},
    {"role": "user", "content": "Sure? ünïcode ✓ <s> [INST]"},
]
TWO = THREE[:3]
CONVERSATIONS = {"one turn": HELLO, "two exchanges": TWO, "three exchanges": THREE}
# add_bos_token as written in the model's tokenizer; add_prefix_space=False keeps SentencePiece
# from putting a "▁" before every separately encoded piece, so LLaMA-Factory's ids decode to text.
TOKENIZERS = {"adds BOS": {}, "no BOS": {"add_bos_token": False},
              "no prefix space": {"add_prefix_space": False}}


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + messages


@functools.cache
def _trained_dir(root: Path, starter_dir: Path, name: str, variant: str) -> Path:
    """The starter's tokenizer as a model trained with template ``name`` would be exported:
    LLaMA-Factory's special-token fixes applied and its own Jinja as the chat template."""
    from llamafactory.data.template import TEMPLATES
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(starter_dir, **TOKENIZERS[variant])
    TEMPLATES[name].fix_special_tokens(tokenizer)
    tokenizer.chat_template = TEMPLATES[name]._get_jinja_template(tokenizer)
    target = root / f"{name}-{variant.replace(' ', '-')}"
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def trained(tmp_path_factory, starter_dir):
    root = tmp_path_factory.mktemp("trained")

    def load(name: str, variant: str = "adds BOS"):
        from transformers import AutoTokenizer

        folder = _trained_dir(root, starter_dir, name, variant)
        return folder, AutoTokenizer.from_pretrained(folder)

    return load


def _adds_bos(tokenizer) -> bool:
    return tokenizer.encode("a", add_special_tokens=True)[0] == tokenizer.bos_token_id


def test_go_renderer_follows_ollamas_chat_rules():
    shape = "[{{ .System }}]{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}"
    hello = "user=Hello there, how are you?;"
    assert gotmpl.render(shape, HELLO, system="model") == "[model]system=model;" + hello
    own = _with_system(HELLO, "mine")  # a request's system message replaces the model's SYSTEM
    assert gotmpl.render(shape, own, system="model") == "[mine]system=mine;" + hello
    merged = [{"role": "system", "content": "a"}, {"role": "user", "content": "x"},
              {"role": "user", "content": "y"}, {"role": "system", "content": "b"}]
    assert gotmpl.render(shape, merged) == "[a\n\nb]system=a;user=x\n\ny;system=b;"
    with pytest.raises(RuntimeError, match="legacy"):
        gotmpl.render("{{ .Prompt }}", HELLO)


@pytest.mark.parametrize("text", ["{", "{{", "a{{b}}c", "{{{", "}}{", "{{- x -}}", "{{ .System }}", "x{"])
def test_literal_text_survives_go_templates(text):
    assert gotmpl.render(go_text(text) + "{{ range .Messages }}{{ .Content }}{{ end }}", HELLO) == \
        text + HELLO[0]["content"]


@pytest.mark.parametrize("name", SUPPORTED_OLLAMA_TEMPLATES)
def test_template_renders_like_the_models_own_chat_template(name, trained):
    """Go render of the generated TEMPLATE (with Ollama's SYSTEM handling) == the exported
    model's apply_chat_template, minus the leading BOS the runner adds itself."""
    from llamafactory.data.template import TEMPLATES

    template = TEMPLATES[name]
    cases, expected = [], []
    for variant in ("adds BOS", "no BOS"):
        folder, tokenizer = trained(name, variant)
        bos = tokenizer.bos_token if _adds_bos(tokenizer) else None
        assert (variant == "adds BOS") == (bos is not None)
        default = ollama_format_for(name, folder)
        own = ollama_format_for(name, folder, system=OWN_SYSTEM)
        assert default.system == (template.default_system or None) and own.system == OWN_SYSTEM
        assert tokenizer.eos_token in default.stop and set(template.stop_words) <= set(default.stop)
        if bos:  # never a second BOS after the runner's
            assert not default.template.startswith(bos)
        for messages in CONVERSATIONS.values():
            for fmt, system in ((default, None), (default, SYSTEM), (own, None)):
                text = tokenizer.apply_chat_template(
                    _with_system(messages, system or (fmt.system if fmt is own else None)),
                    tokenize=False, add_generation_prompt=True)
                if bos and text.startswith(bos):
                    text = text[len(bos):]
                cases.append((fmt.template, _with_system(messages, system), fmt.system))
                expected.append(text)
    got = gotmpl.render_many(cases)
    for (_, messages, system), want, have in zip(cases, expected, got, strict=True):
        assert have == want, (name, messages, system)


@pytest.mark.parametrize("name", SUPPORTED_OLLAMA_TEMPLATES)
def test_ollamas_tokens_are_llamafactorys_training_tokens(name, trained):
    """What Ollama feeds the model (runner BOS + the rendered prompt, special tokens parsed) is
    exactly what LLaMA-Factory trains and chats on (encode_oneturn / encode_multiturn)."""
    from llamafactory.data.template import TEMPLATES

    template = TEMPLATES[name]
    folder, tokenizer = trained(name, "no prefix space")
    fmt = ollama_format_for(name, folder)
    bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []

    def ollama_ids(prompt: str) -> list[int]:
        return bos + tokenizer.encode(prompt, add_special_tokens=False)

    for messages in (HELLO, THREE):
        for system in (None, SYSTEM):
            prompt = gotmpl.render(fmt.template, _with_system(messages, system), fmt.system)
            asking = [*messages, {"role": "assistant", "content": ""}]
            lf_prompt, _ = template.encode_oneturn(tokenizer, asking, system=system)
            assert ollama_ids(prompt) == bos * fmt.extra_bos + lf_prompt, (messages, system)
            done = [*messages, {"role": "assistant", "content": "Yes."}]
            full = gotmpl.render(fmt.template, _with_system(done, system), fmt.system)
            pairs = template.encode_multiturn(tokenizer, done, system=system)
            assert ollama_ids(full) == bos * fmt.extra_bos + [i for p, r in pairs for i in p + r]
            text = tokenizer.decode(lf_prompt, skip_special_tokens=False)
            if "▁" not in prompt:  # SentencePiece decodes a literal "▁" as a space
                lead = tokenizer.bos_token if text.startswith(tokenizer.bos_token) and bos else ""
                assert text == lead + prompt


def test_the_starters_own_chat_template_is_chatml(starter_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(starter_dir)
    fmt = ollama_format_for("chatml", starter_dir)
    assert fmt.stop == ["<|im_end|>", "<|im_start|>"] and fmt.system is None
    # The starter's tokenizer adds a BOS that LLaMA-Factory's chatml never writes.
    assert fmt.extra_bos and not fmt.template.startswith("<s>")
    cases = [(fmt.template, _with_system(m, s), fmt.system)
             for m in CONVERSATIONS.values() for s in (None, SYSTEM)]
    want = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for _, m, _ in cases]
    assert gotmpl.render_many(cases) == want


def test_stop_words_bos_and_default_system(trained):
    folder, _ = trained("llama3")
    fmt = ollama_format_for("llama3", folder)
    assert fmt.stop == ["<|eot_id|>", "<|eom_id|>"] and fmt.system is None and not fmt.extra_bos
    assert fmt.template.startswith("{{ if .System }}<|start_header_id|>system")  # BOS left to the runner
    no_bos = ollama_format_for("llama3", trained("llama3", "no BOS")[0])
    assert no_bos.template.startswith("<s>{{ if .System }}")  # kept: nothing else would add it
    llama2 = ollama_format_for("llama2", trained("llama2")[0])
    assert llama2.stop == ["</s>"] and "{{ if not $first }}<s>{{ end }}[INST] " in llama2.template
    vicuna = ollama_format_for("vicuna", trained("vicuna")[0], system="  ")
    assert vicuna.system.startswith("A chat between a curious user") and vicuna.stop == ["</s>"]


def test_templates_ollama_cannot_express_are_refused(starter_dir):
    from llamafactory.data.template import TEMPLATES

    refused = sorted(set(TEMPLATES) - set(SUPPORTED_OLLAMA_TEMPLATES))
    assert {"qwen3", "deepseekr1", "qwen2_vl", "llava", "chatglm3"} <= set(refused)
    for name in refused:
        with pytest.raises(InvalidInput, match=f"template '{name}' cannot be expressed"):
            ollama_format_for(name, starter_dir)
    with pytest.raises(InvalidInput, match="thinking"):
        ollama_format_for("qwen3", starter_dir)
    with pytest.raises(InvalidInput, match="multimodal"):
        ollama_format_for("qwen2_vl", starter_dir)
    with pytest.raises(InvalidInput, match="no chat template named 'nope'"):
        ollama_format_for("nope", starter_dir)
    with pytest.raises(InvalidInput, match="cannot load the tokenizer"):
        ollama_format_for("chatml", starter_dir / "missing")


def test_a_models_system_prompt_reaches_ollama_the_arena_and_training(wb, starter):
    from app.core.hardware import Hardware
    from app.core.tables import ModelVersion, Run
    from app.data import datasets
    from app.train import training
    from tests.conftest import ROOT

    assert ollama_format(starter).system is None and registry.model_system_prompt(starter) == ""
    mv = registry.edit_model(wb, starter.id, system_prompt=OWN_SYSTEM)
    assert registry.model_system_prompt(mv) == OWN_SYSTEM and ollama_format(mv).system == OWN_SYSTEM

    # The arena's local engine: the model's prompt is the one LLaMA-Factory encodes when a chat
    # gives none, and a chat's own prompt still wins.
    greedy = GenSettings(temperature=0.0, max_new_tokens=24)
    engine = model_engines(wb).engine(mv)
    assert engine.system_for(greedy) == OWN_SYSTEM
    assert engine.system_for(GenSettings(system_prompt="other")) == "other"
    own = model_engines(wb).complete(mv, HELLO, greedy)
    plain_mv = registry.edit_model(wb, starter.id, system_prompt="")
    assert "system_prompt" not in plain_mv.meta
    assert model_engines(wb).engine(plain_mv).system_for(greedy) is None
    plain = model_engines(wb).complete(plain_mv, HELLO, greedy)
    explicit = model_engines(wb).complete(plain_mv, HELLO, GenSettings(temperature=0.0, max_new_tokens=24,
                                                                    system_prompt=OWN_SYSTEM))
    assert own == explicit and own != plain

    # Training: the prompt becomes default_system unless the user overrides it, and the trained
    # version inherits what it was trained with.
    mv = registry.edit_model(wb, starter.id, system_prompt=OWN_SYSTEM)
    ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")

    def plan(**overrides):
        req = training.TrainRequest("sft_lora", mv.id, [ds.id], overrides=overrides)
        return training.plan_run(wb, req, wb.settings.runs_dir / "x", hardware=Hardware((), True)).config

    assert plan()["default_system"] == OWN_SYSTEM
    assert plan(default_system="Trained otherwise.")["default_system"] == "Trained otherwise."
    assert "default_system" not in training.build_config(
        wb, training.get_recipe("sft_lora"), plain_mv, [ds], wb.settings.runs_dir / "y")
    with wb.session() as s:
        run = Run(name="r", stage="sft", model_id=mv.id, output_dir=str(wb.settings.runs_dir / "r"),
                  config=plan(default_system="Trained otherwise."))
        s.add(run)
        s.flush()
        child = s.get(ModelVersion, training._register_output(s, run, "lora", False))
        assert registry.model_system_prompt(child) == "Trained otherwise."

