"""Make a GGUF start its prompts the way training did.

llama.cpp (and so Ollama) puts a BOS token in front of every prompt when the GGUF's
``tokenizer.ggml.add_bos_token`` says so, which converters copy from the tokenizer.
LLaMA-Factory, however, builds prompts from its template's slots without the tokenizer's
automatic tokens: ``chatml`` starts with no BOS, ``llama3`` with one. A model trained
and judged without a BOS and served with one answers differently, so after conversion
the flag is set to what the version's LLaMA-Factory template does.

SentencePiece vocabularies have a second trap: llama.cpp puts a "▁" in front of the text
after every special token (unless the GGUF says ``add_space_prefix = false``), while a
non-legacy transformers tokenizer does not. `align_gguf` fixes what can be set in place and
reports a mismatch it cannot fix, so the deploy refuses it instead of shipping it. The
GGUF's EOS becomes the template's end-of-turn token too (LLaMA-Factory replaces the EOS
with it in training and stops generation there, not at the tokenizer's own EOS).
"""

from __future__ import annotations

from pathlib import Path

ADD_BOS = "tokenizer.ggml.add_bos_token"
SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"
EOS_ID = "tokenizer.ggml.eos_token_id"


def template_facts(template: str, model_dir: Path | str) -> tuple[bool, int | None]:
    """How LLaMA-Factory's ``template`` frames a conversation for this tokenizer: whether it
    starts with the BOS token, and the token id that ends an answer (its end-of-turn word
    where the template replaces the tokenizer's EOS, e.g. ``<|im_end|>`` for chatml)."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bos = tokenizer.bos_token_id
    lf = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template))
    ids, _ = lf.encode_oneturn(tokenizer, [{"role": "user", "content": "hi"},
                                           {"role": "assistant", "content": "hello"}])
    return bos is not None and bool(ids) and ids[0] == bos, tokenizer.eos_token_id


def template_adds_bos(template: str, model_dir: Path | str) -> bool:
    return template_facts(template, model_dir)[0]


def read_add_bos(path: Path | str) -> bool | None:
    """The GGUF's flag; None when it has none (llama.cpp then follows the vocab type)."""
    from gguf import GGUFReader

    return _flag(GGUFReader(str(path)).fields, ADD_BOS)


def _write(path: Path | str, key: str, value: int | bool) -> bool:
    """Set a scalar field in place (the file keeps its size); returns whether it changed.
    A GGUF without the field cannot grow one in place: an error, not a silent mismatch."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path), "r+")
    field = reader.fields.get(key)
    if field is None:
        raise ValueError(f"{path} has no {key} field to set")
    part = field.parts[field.data[0]]
    if part[0] == value:
        return False
    part[0] = value
    reader.data.flush()
    return True


def write_add_bos(path: Path | str, value: bool) -> bool:
    return _write(path, ADD_BOS, value)


def _flag(fields, key: str) -> bool | None:
    field = fields.get(key)
    return None if field is None else bool(field.parts[field.data[0]][0])


def space_after_special(model_dir: Path | str) -> bool | None:
    """Whether the transformers tokenizer starts text after a special token with "▁"
    (None: not a SentencePiece-style tokenizer, nothing to compare)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.eos_token is None:
        return None
    pieces = tok.convert_ids_to_tokens(tok.encode(f"{tok.eos_token}hi", add_special_tokens=False))
    spaced = "".join(tok.convert_ids_to_tokens(tok.encode("a b", add_special_tokens=False)))
    if len(pieces) < 2 or "▁" not in spaced:
        return None
    return pieces[1].startswith("▁")


def align_gguf(path: Path | str, template: str, model_dir: Path | str) -> dict[str, bool]:
    """Set the GGUF's BOS flag to the template's and check its SentencePiece spacing agrees
    with the transformers tokenizer; returns ``{"add_bos", "spacing_ok"}`` for the record."""
    from gguf import GGUFReader

    add_bos, eos_id = template_facts(template, model_dir)
    write_add_bos(path, add_bos)
    if eos_id is not None:  # llama.cpp ends an answer at the EOS the template trained
        _write(path, EOS_ID, eos_id)
    fields = GGUFReader(str(path)).fields
    spacing_ok = True
    model = fields.get("tokenizer.ggml.model")
    if model is not None and bytes(model.parts[model.data[0]]).decode() == "llama":  # SentencePiece
        wanted = space_after_special(model_dir)
        has = _flag(fields, SPACE_PREFIX)
        spacing_ok = wanted is None or wanted == (True if has is None else has)
    return {"add_bos": add_bos, "spacing_ok": spacing_ok}
