"""gradfuse's fused cross-entropy inside Hugging Face transformers' causal LMs.

One line::

    model = gradfuse.integrations.transformers.use_fused_cross_entropy(model)

The model (and a ``Trainer`` given it) then computes its loss with
:func:`gradfuse.nn.functional.cross_entropy`: the loss and the gradient of the logits in one
fused pass, where transformers' ``ForCausalLMLoss`` runs torch's log-softmax, gather and their
backward. Everything around the kernel is transformers' own rule (``transformers/loss/
loss_utils.py``): logits upcast to float32, labels shifted left by one with ``ignore_index``
padding (or the caller's ``shift_labels``), positions labelled ``ignore_index`` (-100) skipped,
and with ``num_items_in_batch`` (the ``Trainer`` passes it, under gradient accumulation too) the
summed loss divided by that count instead of the mean.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as torch_f
from torch import Tensor

from gradfuse.nn.functional import cross_entropy

__all__ = ["causal_lm_loss", "use_fused_cross_entropy"]


def causal_lm_loss(
    logits: Tensor,
    labels: Tensor | None,
    vocab_size: int,
    num_items_in_batch: Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: Tensor | None = None,
    **kwargs: Any,
) -> Tensor:
    """transformers' ``ForCausalLMLoss`` (same signature, same result) on gradfuse's fused
    cross-entropy.

    ``logits`` (..., seq, vocab_size) predict ``labels`` (..., seq) shifted by one position;
    the last position has no target. ``shift_labels`` (already shifted, as a padding-free
    collator gives them) replaces ``labels``. Extra keyword arguments (a model's forward passes its
    ``**kwargs`` on) are accepted and ignored, as transformers' loss ignores them.
    """
    if logits.shape[-1] != vocab_size:
        raise ValueError(
            f"causal_lm_loss: logits has shape {tuple(logits.shape)}, expected its last "
            f"dimension to be vocab_size={vocab_size}"
        )
    logits = logits.float()  # as transformers: the loss in float32 whatever the model's dtype
    if shift_labels is None:
        if labels is None:
            raise ValueError("causal_lm_loss: labels is None, expected labels or shift_labels")
        if labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"causal_lm_loss: labels has shape {tuple(labels.shape)}, expected the logits' "
                f"shape without the vocabulary dimension, {tuple(logits.shape[:-1])}"
            )
        padded = torch_f.pad(labels, (0, 1), value=ignore_index)
        shift_labels = padded[..., 1:].contiguous()
    flat_logits = logits.view(-1, vocab_size)
    flat_labels = shift_labels.reshape(-1).to(flat_logits.device)
    if num_items_in_batch is None:
        return cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index)
    loss = cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def use_fused_cross_entropy(model: torch.nn.Module) -> torch.nn.Module:
    """Make a transformers causal LM compute its training loss with :func:`causal_lm_loss`;
    returns ``model`` (changed in place) so that the call fits on the line that builds it.

    Sets the model's ``loss_function`` (the hook transformers' models call with their logits
    and labels). Only causal LMs: a model whose ``loss_type`` maps to another loss (masked LM,
    sequence classification, ...) is refused rather than silently given the wrong rule.
    """
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    if not hasattr(type(model), "loss_function"):
        raise TypeError(
            "use_fused_cross_entropy: model must be a transformers PreTrainedModel (it has a "
            f"loss_function hook), got {type(model).__name__}"
        )
    loss_type = getattr(model, "loss_type", None)
    # transformers falls back to ForCausalLMLoss for a loss_type it does not know; so do we.
    if loss_type in LOSS_MAPPING and LOSS_MAPPING[loss_type] is not ForCausalLMLoss:
        raise ValueError(
            f"use_fused_cross_entropy: model {type(model).__name__} has loss_type={loss_type!r}, "
            "expected a causal LM (a loss_type that transformers maps to ForCausalLMLoss)"
        )
    # A property of PreTrainedModel with a setter; torch's Module stub types attributes as
    # Tensor | Module.
    model.loss_function = causal_lm_loss  # type: ignore[assignment]
    return model
