"""Per-example loss weights for SFT: how the multitask (Distilling step-by-step) mode weights its two tasks.

Why per-example weights and not a weighted sampler: a sampler only changes how *often* each task is
seen, so with enough epochs both tasks are still fitted fully; a weight on the loss is the paper's
``(1 - alpha) * L_predict + alpha * L_explain``, and weight 0 really means "no gradient from this task".

How: the exported dataset carries a ``loss_weight`` column (see ``export.task_weights``).  TRL keeps it
through tokenization (it only drops it when packing, which this mode turns off), the collator below
passes it to the batch, and :class:`WeightedSFTTrainer` computes

    loss = mean_i( w_i * l_i ),   l_i = mean NLL over the completion tokens of example i

so a rationale's many tokens do not outweigh an answer's few, as in the paper where each task's loss
is its own token mean.  The per-task losses are logged as ``loss_predict`` / ``loss_explain``.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

WEIGHT_COLUMN = "loss_weight"
TASK_COLUMN = "task_code"
TASK_CODES = {"label": 0, "rationale": 1, "predict": 2, "explain": 3}


def example_losses(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """Mean NLL over each example's completion tokens (labels != -100), shape (batch,)."""
    labels = inputs["labels"]
    fwd = {k: v for k, v in inputs.items() if k not in ("labels", WEIGHT_COLUMN, TASK_COLUMN)}
    fwd["use_cache"] = False
    try:  # TRL >= 1.x patches a fused LM head that returns per-token log-probs without full logits
        out = model(**fwd, labels=labels, fused_lm_head=True)
        log_probs, mask = out.log_probs, (labels[:, 1:] != -100)
    except TypeError:
        logits = model(**fwd).logits[:, :-1].float()
        tgt = labels[:, 1:]
        mask = tgt != -100
        log_probs = -torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), tgt.clamp(min=0).reshape(-1), reduction="none"
        ).view(tgt.shape) * mask
    n = mask.sum(dim=1)
    return -(log_probs * mask).sum(dim=1) / n.clamp(min=1)


class WeightedCollator:
    """Wrap TRL's collator: pull ``loss_weight`` (and the task code) out of each example into tensors."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = [float(e.pop(WEIGHT_COLUMN, 1.0)) for e in examples]
        codes = [int(e.pop(TASK_COLUMN, -1)) for e in examples]
        batch = self.base(examples)
        batch[WEIGHT_COLUMN] = torch.tensor(weights, dtype=torch.float32)
        batch[TASK_COLUMN] = torch.tensor(codes, dtype=torch.long)
        return batch


class WeightedSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the weighted mean of per-example losses (see the module docstring)."""

    # The loss below is a per-micro-batch mean: let Trainer divide it by the accumulation steps.
    loss_is_scaled_for_ga = False  # type: ignore[assignment]  # TRL's base class declares it as None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self, "padding_free", False):
            raise ValueError("per-example loss weights need unpacked, padded batches: turn packing/padding-free off")
        self.data_collator = WeightedCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None:
            for c in (WEIGHT_COLUMN, TASK_COLUMN):
                if c not in self._signature_columns:
                    self._signature_columns.append(c)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        weights = inputs.pop(WEIGHT_COLUMN, None)
        codes = inputs.pop(TASK_COLUMN, None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        per_example = example_losses(model, inputs)
        weights = weights.to(per_example.device, per_example.dtype)
        loss = (weights * per_example).mean()
        mode = "train" if model.training else "eval"
        if codes is not None:
            for name in ("predict", "explain"):
                sel = codes.to(per_example.device) == TASK_CODES[name]
                if bool(sel.any()):
                    self._metrics[mode][f"loss_{name}"].append(per_example[sel].mean().item())
        return (loss, None) if return_outputs else loss


def add_task_codes(dataset: Any) -> Any:
    """Add the integer ``task_code`` column (from ``task``) that the collator turns into a tensor."""
    return dataset.map(lambda ex: {TASK_COLUMN: TASK_CODES.get(ex.get("task"), -1)})
