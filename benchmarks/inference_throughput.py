"""Inference throughput on MELD test: utterances per second and peak memory, per route.

Routes (each in its own process, so peak memory is its own), run for every model given:

``naive``              the paper's procedure: one prompt at a time, ``model.generate``, parse.
``generate``           instructerc's generate mode: greedy decoding batched by length, strict parsing.
``score``              instructerc's score mode: every label scored as a continuation; prompts of a
                       dialogue packed as a prefix tree (the shared prefix is computed once).
``score-incremental``  score mode one utterance at a time, as a live conversation grows, reusing
                       the conversation's key/value cache between turns.

(An older ``score-split`` route, trunks then branches, was removed with its code; its figures in
``results/speed/`` stay as measured.)

Each model is one template, trained with the same recipe: ``--paper-model`` on ``instructerc``,
``--prefix-model`` on ``dialogue-prefix``, ``--stream-model`` on ``dialogue-stream``;
``--default-model`` adds the model shipped in the package. Speed-ups are given against the naive
route of the same model and of the paper-template model, in the same precision. ``--dtypes``
runs every route in each precision (default: ``auto``, as ``instructerc predict`` does).

    python benchmarks/inference_throughput.py --paper-model A/model --prefix-model B/model --stream-model C/model \
        --data ../shared/data --dialogues 40
    python benchmarks/inference_throughput.py --default-model --dtypes float32 bfloat16 --routes default:score --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _report import check_meld, existing_dir, input_errors_to, output_file, positive_int, write_json


def test_dialogues(data: Path, count: int | None):
    from instructerc.data.registry import DataSource, load_dialogues

    dialogues = load_dialogues(DataSource("meld", data), "test")
    return dialogues[:count] if count else dialogues


def run_naive(predictor, dialogues) -> dict:
    """One prompt string at a time through ``model.generate``, as the paper's inference script does."""
    import torch

    tokenizer, model = predictor.tokenizer, predictor.model
    invalid, count = 0, 0
    max_new = predictor.scorer.max_answer_tokens + 2
    started = time.perf_counter()
    for encoded in predictor.encoded_prompts([(d, i) for d in dialogues for i in range(len(d))]):
        ids = tokenizer(encoded.example.prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        invalid += predictor.label_set.parse_exact(text) is None
        count += 1
    return {"seconds": time.perf_counter() - started, "utterances": count, "invalid": invalid}


def run_predictor(predictor, dialogues, mode: str) -> dict:
    started = time.perf_counter()
    predictions = predictor.predict(dialogues, mode=mode)
    seconds = time.perf_counter() - started
    flat = [p for ps in predictions for p in ps]
    return {"seconds": seconds, "utterances": len(flat), "invalid": sum(p.label is None for p in flat)}


def run_incremental(predictor, dialogues) -> dict:
    from instructerc.inference.incremental import ConversationCache

    count = 0
    started = time.perf_counter()
    for dialogue in dialogues:
        cache = ConversationCache()
        for n in range(1, len(dialogue) + 1):
            predictor.predict_next(dialogue.with_utterances(dialogue.utterances[:n]), cache)
            count += 1
    return {"seconds": time.perf_counter() - started, "utterances": count, "invalid": 0}


MODEL_ROUTES = {
    "paper": ("naive", "generate", "score"),
    "prefix": ("naive", "score", "score-incremental"),
    "stream": ("naive", "score", "score-incremental"),
    "default": ("naive", "score"),
}


def model_of(args: argparse.Namespace, kind: str) -> Path | None:
    if kind == "default":
        from instructerc.modeling.default_model import default_model_dir

        return default_model_dir() if args.default_model else None
    return getattr(args, f"{kind}_model")


def child(args: argparse.Namespace) -> None:
    from instructerc.inference.predictor import InferenceConfig, Predictor

    kind, route = args.route.split(":")
    # The naive route is the paper's procedure on stock transformers: SDPA attention, as loaded.
    config = InferenceConfig(
        max_tokens=args.max_tokens,
        batch_tokens=args.batch_tokens,
        block_sparse_attention=False if route == "naive" else None,
    )
    predictor = Predictor.from_directory(model_of(args, kind), device="cpu", config=config, dtype=args.dtype or "auto")
    dialogues = test_dialogues(args.data, args.dialogues)
    # Demonstration retrieval embeds the test utterances once (then reads a disk cache): do that
    # before the clock starts, so no route pays it and every route builds its prompts alike.
    predictor.encoded_prompts([(d, i) for d in dialogues for i in range(len(d))])
    if route == "naive":
        result = run_naive(predictor, dialogues)
    elif route == "score-incremental":
        result = run_incremental(predictor, dialogues)
    else:
        result = run_predictor(predictor, dialogues, route)
    result.update(
        route=args.route,
        template=predictor.setup.template.name,
        precision=predictor.precision,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print("RESULT " + json.dumps(result))


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The models, the data and the precisions, checked before the first route's process starts."""
    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.modeling.model_dir import Manifest
    from instructerc.modeling.precision import resolve_dtype

    for kind in MODEL_ROUTES:
        if kind != "default" and getattr(args, f"{kind}_model"):
            with input_errors_to(parser, f"--{kind}-model"):
                Manifest.load(getattr(args, f"{kind}_model"))
    check_meld(parser, args.data, "test")
    available = len(load_dialogues(DataSource("meld", args.data), "test"))
    if args.dialogues and args.dialogues > available:
        parser.error(f"argument --dialogues: MELD test has {available} dialogues, not {args.dialogues}")
    # Results are keyed by the precision run: two names for one precision would keep one run's figures.
    resolved = [resolve_dtype(name, "cpu") for name in args.dtypes]
    if len(set(resolved)) < len(resolved):
        names = ", ".join(f"{name} = {precision}" for name, precision in zip(args.dtypes, resolved))
        parser.error(f"argument --dtypes: the same precision twice on this machine ({names}); give each once")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-model", type=existing_dir, help="a model directory trained on the instructerc template")
    parser.add_argument("--prefix-model", type=existing_dir, help="a model directory trained on the dialogue-prefix template")
    parser.add_argument("--stream-model", type=existing_dir, help="a model directory trained on the dialogue-stream template")
    parser.add_argument("--default-model", action="store_true", help="also run the model shipped in the package (routes default:*)")
    parser.add_argument(
        "--dtypes", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16"], help="run every route in each precision"
    )
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dialogues", type=positive_int, help="only the first N MELD test dialogues (default: all 280)")
    parser.add_argument("--max-tokens", type=positive_int, help="tokens per packed row (default: the predictor's for the device)")
    parser.add_argument(
        "--batch-tokens", type=positive_int, help="padded tokens per forward pass (default: the predictor's for the device)"
    )
    parser.add_argument("--routes", nargs="+", help="only these routes, e.g. paper:naive stream:score (default: all for the models given)")
    parser.add_argument("--route", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.route:
        with input_errors_to(parser):
            child(args)
        return
    routes = [f"{kind}:{route}" for kind, names in MODEL_ROUTES.items() if model_of(args, kind) for route in names]
    if args.routes:
        unknown = set(args.routes) - set(routes)
        if unknown:
            parser.error(f"unknown routes or models not given: {sorted(unknown)} (available: {routes})")
        routes = [r for r in routes if r in args.routes]
    if not routes:
        parser.error("give at least one of --paper-model, --prefix-model, --stream-model, --default-model")
    check_options(parser, args)
    results = {}
    for route, dtype in [(route, dtype) for dtype in args.dtypes for route in routes]:
        command = [sys.executable, __file__, "--route", route, "--data", str(args.data), "--dtype", dtype]
        if args.default_model:
            command.append("--default-model")
        for kind in MODEL_ROUTES:
            if kind != "default" and getattr(args, f"{kind}_model"):
                command += [f"--{kind}-model", str(getattr(args, f"{kind}_model"))]
        for option in ("dialogues", "max_tokens", "batch_tokens"):
            if getattr(args, option):
                command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        done = subprocess.run(command, capture_output=True, text=True)
        line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            sys.exit(f"{route} failed:\n{done.stderr[-3000:]}")
        r = json.loads(line[len("RESULT ") :])
        results[f"{route}@{r['precision']}"] = r
        r["rate"] = r["utterances"] / r["seconds"]
        print(
            f"{route:24} {r['precision']:9} {r['template']:16} {r['rate']:8.2f} utt/s  {r['seconds']:8.1f} s  "
            f"peak RSS {r['peak_rss_mb']:6.0f} MB  "
            f"invalid {r['invalid']}/{r['utterances']}",
            flush=True,
        )
    print()
    print(f"{'route':34} {'x same model naive':>20} {'x paper naive':>15} {'x float32':>10}")
    for key, r in results.items():
        route, precision = key.split("@")
        own = results.get(route.split(":")[0] + ":naive@" + precision)
        paper = results.get("paper:naive@" + precision)
        fp32 = results.get(f"{route}@float32")

        def ratio(base: dict | None, r: dict = r) -> str:
            return f"{r['rate'] / base['rate']:.2f}x" if base else "-"

        print(f"{key:34} {ratio(own):>20} {ratio(paper):>15} {ratio(fp32):>10}")
    if args.json:
        write_json(args.json, {"results": results}, args, skip=("route", "dtype"))


if __name__ == "__main__":
    main()
