"""Build a tiny random-initialised Llama-shaped student offline, for tests, smoke runs and benchmarks.

Why: the real students live on the Hub, and tests and CI have no network.  A byte-level BPE trained on
the task's own texts plus a 2-layer, 64-wide Llama gives a model that loads, trains, saves and generates
through exactly the same code paths as a real student, in seconds, on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

#: Special tokens of the tiny tokenizer.  ``<|end|>`` is both the end-of-turn and the end-of-sequence token,
#: so a student trained on the chat template learns to stop where generation should stop.
PAD, EOS, BOS, UNK = "<|pad|>", "<|end|>", "<|begin|>", "<|unk|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

#: A minimal chat template: the prompt rendered alone (with the generation prompt) is a prefix of the
#: prompt rendered with its answer, which completion-only loss needs.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '<|end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 800, chat_template: bool = True):
    """A byte-level BPE trained on ``texts`` (any text can be encoded: unknown words fall back to bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, EOS, BOS, UNK, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # sorted: texts often arrive in teacher completion order, and BPE breaks count ties by position
    tok.train_from_iterator(sorted(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=BOS, unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    if chat_template:
        fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def build_tiny_student(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    vocab_size: int = 800,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 1024,
    chat_template: bool = True,
    seed: int = 0,
) -> Path:
    """Train the tokenizer, initialise a ``LlamaForCausalLM`` and ``save_pretrained`` both to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(texts, vocab_size=vocab_size, chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
