"""The counting in benchmarks/score_cost_model.py: a token's multiply-adds are the layer's weights."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def load_script():
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("score_cost_model", benchmarks / "score_cost_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    sys.path.insert(0, str(benchmarks))  # for its sibling _report, as when run as a script
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(benchmarks))
    return module


def test_linear_cost_is_the_layers_matrix_weights_with_grouped_query_attention():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=48, intermediate_size=80, num_hidden_layers=1, num_attention_heads=6, num_key_value_heads=2, vocab_size=64
    )
    layer = LlamaForCausalLM(config).model.layers[0]
    weights = sum(p.numel() for name, p in layer.named_parameters() if name.endswith("proj.weight"))
    cost = load_script().LayerCost.of(config)
    assert cost.linear == weights
    assert cost.per_context_token == 2 * 48  # scores and weighted values, over all heads


def test_work_grows_with_the_context_each_token_attends_over():
    cost = load_script().LayerCost(linear=100.0, per_context_token=2.0)
    assert cost.tokens([1, 3]) == 100 + 2 + 100 + 6
    assert cost.tokens([10] * 4) > cost.tokens([1, 2, 3, 4])
