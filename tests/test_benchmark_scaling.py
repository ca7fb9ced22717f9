"""The size sweep's model sizes and FLOP counts (``benchmarks/_scaling.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _scaling import SIZES, FlopCounter, executed_flops, matmul_peak, model_config, update_flops  # noqa: E402


def _gpt2(n_layer: int = 2, n_embd: int = 16, vocab: int = 10):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=32)
    )


def test_update_flops_counts_every_matmul_weight_and_full_attention():
    model = _gpt2()
    d, vocab, layers = 16, 10, 2
    # Per block: c_attn d x 3d, attention c_proj d x d, c_fc d x 4d, MLP c_proj 4d x d; then the
    # (tied) output head vocab x d. Embeddings are lookups and do not count.
    n = layers * (3 * d * d + d * d + 4 * d * d + 4 * d * d) + vocab * d
    lengths = [3, 7]
    expected = sum(6 * n * t + 12 * layers * d * t * t for t in lengths)
    assert update_flops(model, lengths) == pytest.approx(expected)


def test_update_flops_uses_query_heads_for_grouped_query_attention():
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(SIZES["small"], hidden_size=32, intermediate_size=48, num_hidden_layers=1)
    config = AutoConfig.for_model(fields.pop("model_type"), vocab_size=10, **fields)
    model = AutoModelForCausalLM.from_config(config)
    d, kv = 32, 32 // 4 * 2  # 4 query heads, 2 key-value heads of size 8
    n = (d * d + 2 * d * kv + d * d) + 3 * d * 48 + 10 * d  # q, k, v, o; gate, up, down; head
    assert update_flops(model, [5]) == pytest.approx(6 * n * 5 + 12 * 1 * d * 25)


def test_executed_flops_counts_each_groups_prompt_once_or_the_padded_batch():
    model = _gpt2()
    prompt = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]])  # group prompts of 2 and 3
    completion = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]])
    groups = torch.tensor([0, 0, 1, 1])
    useful = update_flops(model, (prompt.sum(1) + completion.sum(1)).tolist())
    shared = executed_flops(model, prompt, completion, groups)
    padded = executed_flops(model, prompt, completion)
    assert padded == pytest.approx(update_flops(model, [7, 7, 7, 7]))
    # Sharing saves exactly one prompt per extra group member in the dense term (2 + 3 tokens).
    n = (update_flops(model, [1]) - 12 * 2 * 16) / 6
    assert useful - shared == pytest.approx(6 * n * (2 + 3))


def test_flop_counter_times_from_first_start_to_stop():
    counter = FlopCounter(_gpt2())
    with pytest.raises(RuntimeError, match="without start"):
        counter.stop(torch.ones(1, 2), torch.ones(1, 2))
    counter.start()
    first = counter._t0
    counter.start()  # a later forward in the same update pass changes nothing
    assert counter._t0 == first
    counter.stop(torch.ones(2, 3), torch.ones(2, 1), torch.tensor([0, 0]))
    assert counter.flops == [pytest.approx(update_flops(counter.model, [4, 4]))]
    assert len(counter.seconds) == len(counter.cpu_seconds) == len(counter.executed) == 1
    assert counter.flops_per_s(0) > 0 and counter.flops_per_s(0, cpu=True) > 0


def test_model_config_takes_the_tokenizers_vocabulary_and_ids():
    class Tok:
        bos_token_id, eos_token_id, pad_token_id = 2, 1, 0

        def __len__(self) -> int:
            return 100

    fields = model_config("30m", Tok(), seed=0, max_positions=300)
    assert (fields["vocab_size"], fields["eos_token_id"], fields["max_position_embeddings"]) == (100, 1, 300)
    assert model_config("tiny", Tok(), seed=3) == {"seed": 3}
    with pytest.raises(ValueError, match="size must be one of"):
        model_config("huge", Tok(), seed=0)


def test_matmul_peak_restores_threads_and_reports_rates():
    before = torch.get_num_threads()
    peak = matmul_peak(1, n=64, reps=2)
    assert torch.get_num_threads() == before
    assert peak["best"] >= peak["median"] > 0 and peak["best_cpu"] > 0
