"""Load a student (local directory or Hub id), make its tokenizer usable, format prompts, generate in batches.

Why one module: training, evaluation and the local teacher must all see a prompt *exactly* the way the
student was trained on it.  So the prompt format (the student's own chat template when it has one, a
plain documented format when it has none), the tokenizer fixes (a pad token, left padding for
generation) and batched generation live here once, and everything else calls them.

* ``trust_remote_code`` is off unless asked for: a student directory or Hub repo can ship Python code,
  and loading it must be an explicit decision.
* A directory with weights but no tokenizer is a clear error, not a half-loaded model.
* bf16 on a machine without a bf16-capable GPU falls back to fp32 with a warning (see :func:`resolve_bf16`).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from synthkd.jsonl_io import InputError

#: File written next to a trained student: how it was trained and how to prompt it (see ``sft.py``).
TRAIN_RECORD = "synthkd_train.json"

#: Files that mean "this directory has a tokenizer".
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# --------------------------------------------------------------------------------------------------
# the plain prompt format, for students without a chat template
# --------------------------------------------------------------------------------------------------

#: Section headers of the plain format.  ``### Input:`` is also a continuation marker of
#: ``synthkd.answers.strip_continuation``, so a student that runs on into an invented next example is cut.
PLAIN_HEADERS = {"system": "### System:", "user": "### Input:", "assistant": "### Response:"}


def plain_prompt(messages: Sequence[dict[str, Any]], eos_token: str | None = None) -> str:
    """Render chat messages without a chat template; ends with the response header, ready to generate.

    Format (one block per message, blocks separated by a blank line)::

        ### System:
        <system text>

        ### Input:
        <user text>

        ### Response:
        <assistant text><eos>      (earlier assistant turns only)

        ### Response:
    """
    parts: list[str] = []
    for m in messages:
        role = m.get("role", "user")
        header = PLAIN_HEADERS.get(role, f"### {str(role).capitalize()}:")
        content = _content_text(m.get("content"))
        if role == "assistant":
            parts.append(f"{header}\n{content}{eos_token or ''}")
        else:
            parts.append(f"{header}\n{content}")
    parts.append(f"{PLAIN_HEADERS['assistant']}\n")
    return "\n\n".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


# --------------------------------------------------------------------------------------------------
# locating and loading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentSource:
    """Where a student comes from: ``kind`` is "local" (a directory) or "hub" (a repo id)."""

    kind: str
    ref: str

    def __str__(self) -> str:
        return self.ref


def resolve_source(name: str | Path) -> StudentSource:
    """A local directory if it exists, else a Hub id ``org/name``; anything else is an InputError."""
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise InputError([f"{p}: a student must be a model directory (config.json, weights, tokenizer), not a file"])
        return StudentSource("local", str(p))
    s = str(name)
    if _HUB_ID.match(s) and not s.startswith((".", "/")):
        return StudentSource("hub", s)
    raise InputError([f"{s}: no such student directory, and not a Hub id of the form org/name"])


def check_student_dir(path: Path, tokenizer: str | Path | None = None) -> None:
    """Fail early and clearly on a directory that cannot be a student."""
    problems = []
    is_adapter = (path / "adapter_config.json").exists()
    if not (path / "config.json").exists() and not is_adapter:
        problems.append(f"{path}: no config.json (not a transformers model directory)")
    if tokenizer is None and not any((path / f).exists() for f in TOKENIZER_FILES):
        problems.append(
            f"{path}: the student directory has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save one next to the weights with tokenizer.save_pretrained(DIR), or pass --tokenizer PATH"
        )
    if problems:
        raise InputError(problems)


def read_train_record(path: str | Path) -> dict[str, Any]:
    """The training record of a synthkd-trained student ({} for any other model)."""
    f = Path(path) / TRAIN_RECORD
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())
    except ValueError as exc:
        raise InputError([f"{f}: not valid JSON ({exc})"]) from None


def prepare_tokenizer(tok: Any, *, padding_side: str = "left") -> Any:
    """Give the tokenizer a pad token (its unk or eos token when it has none) and set the padding side.

    Left padding is what batched generation needs (every prompt must end where generation starts);
    TRL's collators pad on the right themselves, so training is not affected by this setting.
    """
    if tok.pad_token is None:
        fallback = tok.eos_token if tok.eos_token is not None else tok.unk_token
        if fallback is None:
            tok.add_special_tokens({"pad_token": "<|pad|>"})
            warnings.warn("the tokenizer had no pad, eos or unk token: added '<|pad|>' (the embeddings are resized)",
                          stacklevel=2)
        else:
            tok.pad_token = fallback
    tok.padding_side = padding_side
    return tok


def has_chat_template(tok: Any) -> bool:
    return bool(getattr(tok, "chat_template", None))


def cuda_bf16_available() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_bf16(requested: bool | None) -> bool:
    """bf16 if asked (or, when ``None``, if the GPU supports it); asked for on CPU -> fp32 and a warning."""
    ok = cuda_bf16_available()
    if requested is None:
        return ok
    if requested and not ok:
        warnings.warn("bf16 requested but no CUDA GPU with bf16 support is available: using fp32 instead", stacklevel=2)
        return False
    return bool(requested)


def flash_attention_available() -> bool:
    """FlashAttention-2 usable: a CUDA GPU and the flash_attn package (its varlen kernels make packing cheap)."""
    import importlib.util

    return cuda_bf16_available() and importlib.util.find_spec("flash_attn") is not None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(source: StudentSource, *, tokenizer: str | Path | None = None, revision: str | None = None,
                   trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    ref = str(tokenizer) if tokenizer is not None else source.ref
    if source.kind == "local" and tokenizer is None and (Path(ref) / "adapter_config.json").exists() \
            and not any((Path(ref) / f).exists() for f in TOKENIZER_FILES):
        ref = _adapter_base(Path(ref))
    try:
        tok = AutoTokenizer.from_pretrained(ref, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0]
        if "custom code" in msg and not trust_remote_code:
            msg += " Pass --trust-remote-code only if you trust that code."
        raise InputError([f"{ref}: could not load a tokenizer ({msg})"]) from None
    return prepare_tokenizer(tok)


def _adapter_base(path: Path) -> str:
    cfg = json.loads((path / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise InputError([f"{path}/adapter_config.json: field 'base_model_name_or_path': missing"])
    return base


@dataclass
class Student:
    """A loaded student: model, tokenizer, where it came from, and its training record (if synthkd trained it)."""

    model: Any
    tokenizer: Any
    source: StudentSource
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def chat(self) -> bool:
        return has_chat_template(self.tokenizer)

    @property
    def inference_prefix(self) -> str:
        """Text put before the user's input at inference (``"predict: "`` for a multitask student)."""
        return str(self.record.get("inference_prefix") or "")

    def render(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        return render_messages(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def user_prompt(self, text: str, *, system: str | None = None, prefix: str | None = None) -> str:
        """The full prompt string for one user turn, with the student's inference prefix applied."""
        pre = self.inference_prefix if prefix is None else prefix
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": pre + text}]
        return self.render(msgs)

    def generate(self, prompts: Sequence[str], **kw: Any) -> list["Generation"]:
        """Batched generation; ``chat=False`` for raw text that was not rendered by the chat template."""
        kw.setdefault("chat", self.chat)
        return generate(self.model, self.tokenizer, prompts, **kw)


def render_messages(tok: Any, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
    """The student's chat template when it has one, else :func:`plain_prompt`."""
    if has_chat_template(tok):
        return tok.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=False)
    return plain_prompt(messages, eos_token=tok.eos_token)


def load_student(
    name: str | Path,
    *,
    tokenizer: str | Path | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    bf16: bool | None = False,
    device: str | None = None,
    quantization_config: Any = None,
    for_training: bool = False,
    attn_implementation: str | None = None,
) -> Student:
    """Load a causal LM and its tokenizer from a directory or the Hub.

    ``bf16``: load the weights in bf16 (``None``: when the GPU supports it; ``True`` on CPU falls back
    to fp32 with a warning).  For training, weights stay fp32 and mixed precision is the trainer's job,
    so ``for_training`` ignores ``bf16`` unless the model is quantized.  A directory holding a PEFT
    adapter (``adapter_config.json``) is loaded as base + adapter.
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_source(name)
    if source.kind == "local":
        check_student_dir(Path(source.ref), tokenizer)
    tok = load_tokenizer(source, tokenizer=tokenizer, revision=revision, trust_remote_code=trust_remote_code)
    use_bf16 = resolve_bf16(bf16)
    dtype = torch.bfloat16 if (use_bf16 and (not for_training or quantization_config is not None)) else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": 0}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    is_adapter = source.kind == "local" and (Path(source.ref) / "adapter_config.json").exists()
    try:
        if is_adapter:
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(source.ref, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(source.ref, **kwargs)
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0]
        if "custom code" in msg and not trust_remote_code:
            msg += " Pass --trust-remote-code only if you trust that code."
        raise InputError([f"{source.ref}: could not load the student model ({msg})"]) from None
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if quantization_config is None and not for_training:
        model.to(device or default_device())
    record = read_train_record(source.ref) if source.kind == "local" else {}
    if not for_training:
        model.eval()
    return Student(model=model, tokenizer=tok, source=source, record=record)


# --------------------------------------------------------------------------------------------------
# batched generation
# --------------------------------------------------------------------------------------------------


@dataclass
class Generation:
    """One generated completion: text (stop string and special tokens removed) and token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos or a stop string) or "length"
    #: log-probability of the generated tokens (up to and with eos), when asked for (``scores=True``):
    #: the student's confidence in its answer, e.g. for abstaining at eval
    logprob: float | None = None


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    chat: bool | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: Sequence[str] | str | None = None,
    seed: int = 0,
    scores: bool = False,
) -> list[Generation]:
    """Generate for already-rendered prompt strings, in length-sorted batches with left padding.

    Greedy when ``temperature`` is 0 (the default).  Prompts rendered by a chat template already hold
    their special tokens, so they are tokenized without adding more; plain prompts get the tokenizer's
    usual special tokens, exactly as TRL tokenizes them for training.  Results are in input order.
    """
    import torch
    from transformers import GenerationConfig

    if not prompts:
        return []
    chat = has_chat_template(tok) if chat is None else chat
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    prepare_tokenizer(tok)
    eos_ids = _eos_ids(model, tok)
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_p=top_p if temperature > 0 else 1.0,
        top_k=0 if temperature > 0 else 50,
        pad_token_id=tok.pad_token_id,
        eos_token_id=eos_ids,
        bos_token_id=getattr(model.generation_config, "bos_token_id", None),
        stop_strings=stops or None,
        output_scores=scores,
        return_dict_in_generate=scores,
    )
    enc_all = tok(list(prompts), add_special_tokens=not chat)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(enc_all[i]))
    out: list[Generation | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tok.pad({"input_ids": [enc_all[i] for i in idx]}, padding=True, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            if temperature > 0:
                torch.manual_seed(seed + start)
            with torch.inference_mode():
                gen = model.generate(**batch, generation_config=gen_cfg, tokenizer=tok if stops else None)
            token_lp = None
            if scores:
                # log-softmax of the (processed) logits at each chosen token: the answer's probability
                token_lp = model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True).tolist()
                gen = gen.sequences
            new = gen[:, batch["input_ids"].shape[1]:].tolist()
            for k, (row, i) in enumerate(zip(new, idx)):
                n_tok, hit_eos = len(row), False
                for j, t in enumerate(row):
                    if t in eos_ids:
                        n_tok, hit_eos = j + 1, True
                        break
                text = tok.decode(row[:n_tok], skip_special_tokens=True)
                text, hit_stop = _cut_at_stop(text, stops)
                lp = None if token_lp is None else float(sum(token_lp[k][:n_tok]))
                out[i] = Generation(text=text, prompt_tokens=len(enc_all[i]), completion_tokens=n_tok,
                                    finish_reason="stop" if (hit_eos or hit_stop) else "length", logprob=lp)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def _eos_ids(model: Any, tok: Any) -> list[int]:
    ids: list[int] = []
    for v in (getattr(model.generation_config, "eos_token_id", None), tok.eos_token_id):
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, int) and x not in ids:
                ids.append(x)
    return ids
