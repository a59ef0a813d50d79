"""How far exact computation can take score mode past the naive route, from token counts alone.

Counts the work (multiply-adds) of labelling the first N MELD test dialogues with a model's
template, three ways:

``naive``   every prompt on its own (attention causal over the prompt);
``dense``   score mode's packed prefix-tree rows, attention over the whole row under a mask
            (what one forward pass per row computes);
``exact``   the same rows, each token attending only to its ancestors and the shared prefix
            (what block-sparse attention approaches, minus its own overhead).

The ratios naive/dense and naive/exact are ceilings at equal cost per multiply-add; they ignore
the naive route's decoding steps, which the measured ratio includes. Compare them with
``inference_throughput.py``'s measured speed-ups to see what is left to gain.

    python benchmarks/score_cost_model.py --model runs/meld-paper-f0.1/model --data ../shared/data --dialogues 40 [--json out.json]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from _report import check_meld, existing_dir, input_errors_to, output_file, positive_int, write_json


@dataclass(frozen=True)
class LayerCost:
    """Multiply-adds per token per layer: the projections and MLP, and attention per context token."""

    linear: float
    per_context_token: float

    @classmethod
    def of(cls, config) -> "LayerCost":
        hidden, heads = config.hidden_size, config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        kv = getattr(config, "num_key_value_heads", heads) * head_dim
        projections = 2 * hidden * heads * head_dim + 2 * hidden * kv
        return cls(linear=projections + 3 * hidden * config.intermediate_size, per_context_token=2 * heads * head_dim)

    def tokens(self, contexts: Sequence[float]) -> float:
        """Work of tokens that each attend over ``contexts[i]`` tokens."""
        return sum(self.linear + self.per_context_token * c for c in contexts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=existing_dir, required=True, help="a model directory (its template and tokenizer are used)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dialogues", type=positive_int, default=40, help="the first N MELD test dialogues")
    parser.add_argument("--row-tokens", type=positive_int, nargs="+", default=[512, 1024, 2048], help="packed row sizes to model")
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    args = parser.parse_args(argv)
    check_meld(parser, args.data, "test")

    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.inference.batched import shared_prefix_length
    from instructerc.inference.predictor import Predictor
    from instructerc.modeling.packing import pack

    with input_errors_to(parser, "--model"):
        predictor = Predictor.from_directory(args.model, device="cpu")
    cost = LayerCost.of(predictor.model.config)
    test = load_dialogues(DataSource("meld", args.data), "test")
    if args.dialogues > len(test):
        parser.error(f"argument --dialogues: MELD test has {len(test)} dialogues, not {args.dialogues}")
    dialogues = test[: args.dialogues]
    items = [(d, i) for d in dialogues for i in range(len(d))]
    prompts = [tuple(e.prompt_ids) for e in predictor.encoded_prompts(items)]
    groups = [(d.dataset, d.id) for d, _ in items]

    naive = sum(cost.tokens([(n + 1) / 2] * n) for n in map(len, prompts))
    shared = shared_prefix_length(prompts)
    print(
        f"{len(prompts)} prompts, {sum(map(len, prompts)):,} prompt tokens, {shared} shared by all; "
        f"template {predictor.setup.template.name}"
    )
    print(f"{'row tokens':>10} {'rows':>6} {'tokens':>8} {'naive/dense':>12} {'naive/exact':>12}")
    figures = {
        "prompts": len(prompts),
        "prompt_tokens": sum(map(len, prompts)),
        "shared_prefix_tokens": shared,
        "template": predictor.setup.template.name,
        "layer_cost": {"linear": cost.linear, "per_context_token": cost.per_context_token},
        "naive_multiply_adds_per_layer": naive,
        "rows": [],
    }
    for size in args.row_tokens:
        rows = [row for row, _ in pack([p[shared:] for p in prompts], size, shared_prefix=True, groups=groups)]
        dense = sum(cost.tokens([shared + len(row)] * len(row)) for row in rows)
        exact = sum(cost.tokens([shared + depth + 1 for depth in row.depths]) for row in rows)
        print(f"{size:>10} {len(rows):>6} {sum(map(len, rows)):>8,} {naive / dense:>11.2f}x {naive / exact:>11.2f}x")
        figures["rows"].append(
            {
                "row_tokens": size,
                "rows": len(rows),
                "tokens": sum(map(len, rows)),
                "dense_multiply_adds_per_layer": dense,
                "exact_multiply_adds_per_layer": exact,
                "naive_over_dense": naive / dense,
                "naive_over_exact": naive / exact,
            }
        )
    if args.json:
        write_json(args.json, figures, args)


if __name__ == "__main__":
    main()
