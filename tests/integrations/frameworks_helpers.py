"""Shared pieces of the framework tests (test_frameworks_*.py): a tiny transformers causal LM
built from a config (no download: HF_HUB_OFFLINE is set before transformers is imported) and
token data made from a seed."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the Hub, in these tests or later
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from torch import Tensor

VOCAB = 64
SEQ = 16


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    """A 2-layer Llama with a 64-token vocabulary (about 40k parameters), same weights for the
    same seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    return model


def token_rows(n: int, seed: int = 0, masked: bool = True) -> list[dict[str, Tensor]]:
    """``n`` rows of random tokens; with ``masked`` each row's labels are -100 over a random
    prefix (a prompt that is not trained on), so the rows count different numbers of items."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (SEQ,), generator=gen)
        labels = ids.clone()
        if masked:
            labels[: int(torch.randint(0, SEQ // 2, (1,), generator=gen))] = -100
        rows.append({"input_ids": ids, "labels": labels})
    return rows
