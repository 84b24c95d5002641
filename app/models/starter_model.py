"""Build the tiny starter model: a Llama-architecture causal LM with a SentencePiece
tokenizer trained on the corpus shipped in ``data/``.

It lets a user with no GPU and no Hub access try every tab, and it is the model the
tests train. Torch, transformers and sentencepiece are imported inside the builder so
that importing this module stays cheap.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# LLaMA-Factory template that matches the chat format baked into the tokenizer.
STARTER_TEMPLATE = "chatml"
CHAT_SYMBOLS = ["<|im_start|>", "<|im_end|>"]

# ChatML as a Jinja chat template, so tools that read `chat_template` agree with
# LLaMA-Factory's `chatml` template.
CHATML_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class StarterSpec:
    """Shape of the starter model. The defaults build in about 6 s on 2 CPU cores."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 172
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    pretrain_steps: int = 400
    seed: int = 0


def default_corpus_path() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "starter_corpus.txt"


def _train_tokenizer(lines: list[str], vocab_size: int, out_dir: Path) -> None:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        user_defined_symbols=CHAT_SYMBOLS,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        pad_piece="<pad>",
        split_digits=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(buf.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        # No "▁" glued to the start of each text piece: LLaMA-Factory encodes a prompt piece
        # by piece, so with it prompts would differ from the same text tokenised at once, and
        # llama.cpp reads this flag (GGUF add_space_prefix) to split prompts like training did.
        "add_prefix_space": False,
        "model_max_length": 512,
        "chat_template": CHATML_JINJA,
        "additional_special_tokens": CHAT_SYMBOLS,
        # What transformers writes for special tokens; GGUF converters read it to mark the
        # chat symbols as control tokens, so llama.cpp parses "<|im_start|>" as one token.
        "added_tokens_decoder": {
            str(i): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for i, text in enumerate(["<unk>", "<s>", "</s>", "<pad>", *CHAT_SYMBOLS])},
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special["additional_special_tokens"] = CHAT_SYMBOLS
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def _pretrain(model, tokenizer, lines: list[str], steps: int, seed: int,
              on_step: Callable[[int, int, float], None] | None = None) -> float:
    """A short causal-LM warm-up on the corpus so the starter model says real words."""
    import torch

    if steps <= 0:
        return float("nan")
    rng = random.Random(seed)
    ids = [tokenizer(line)["input_ids"] + [tokenizer.eos_token_id] for line in lines]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        batch = rng.sample(ids, k=min(16, len(ids)))
        width = min(max(len(x) for x in batch), 128)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(input_ids)
        for i, row in enumerate(batch):
            row = row[:width]
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        loss_value = float(loss.item())
        if on_step is not None:
            on_step(step + 1, steps, loss_value)
    model.eval()
    return loss_value


def build_starter_model(
    out_dir: Path, spec: StarterSpec | None = None, corpus_path: Path | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Write a tokenizer and a small warmed-up Llama model to ``out_dir``;
    ``on_step(step, steps, loss)`` follows the warm-up.

    Returns a summary (parameter count, final warm-up loss, spec) that is also
    saved as ``forgeloop_starter.json`` beside the weights.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = spec or StarterSpec()
    corpus_path = corpus_path or default_corpus_path()
    lines = [ln for ln in corpus_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) < 20:
        raise ValueError(f"corpus {corpus_path} has only {len(lines)} lines; need at least 20")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)

    _train_tokenizer(lines, spec.vocab_size, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    loss = _pretrain(model, tokenizer, lines, spec.pretrain_steps, spec.seed, on_step)
    model.save_pretrained(out_dir, safe_serialization=True)
    summary = {
        "params": sum(p.numel() for p in model.parameters()),
        "warmup_loss": loss,
        "template": STARTER_TEMPLATE,
        "spec": asdict(spec),
    }
    (out_dir / "forgeloop_starter.json").write_text(json.dumps(summary, indent=2))
    return summary
