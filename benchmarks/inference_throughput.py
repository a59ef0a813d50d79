"""Inference throughput on MELD test: utterances per second and peak memory, per route.

Routes (each in its own process, so peak memory is its own):

``naive``              the paper's procedure: one prompt at a time, ``model.generate``, parse.
``generate``           instructerc's generate mode: greedy decoding batched by length, strict parsing.
``score``              instructerc's score mode: every label scored as a continuation; prompts of a
                       dialogue packed as a prefix tree (the shared prefix is computed once).
``score-incremental``  score mode one utterance at a time, as a live conversation grows, reusing
                       the conversation's key/value cache between turns.

The paper-template routes use a model trained on the ``instructerc`` template; the
cache-friendly routes use one trained with the same recipe on the ``dialogue-prefix`` template.

    python benchmarks/inference_throughput.py --paper-model RUN_A/model --prefix-model RUN_B/model --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


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
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
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


def child(args: argparse.Namespace) -> None:
    from instructerc.inference.predictor import Predictor

    model = args.paper_model if args.route in ("naive", "generate", "score") else args.prefix_model
    predictor = Predictor.from_directory(model, device="cpu")
    dialogues = test_dialogues(args.data, args.dialogues)
    # Demonstration retrieval embeds the test utterances once (then reads a disk cache): do that
    # before the clock starts, so no route pays it and every route builds its prompts alike.
    predictor.encoded_prompts([(d, i) for d in dialogues for i in range(len(d))])
    if args.route == "naive":
        result = run_naive(predictor, dialogues)
    elif args.route == "score-incremental":
        result = run_incremental(predictor, dialogues)
    else:
        result = run_predictor(predictor, dialogues, "score" if args.route.startswith("score") else "generate")
    result.update(route=args.route, template=predictor.setup.template.name, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(result))


ROUTES = [("naive", "instructerc"), ("generate", "instructerc"), ("score", "instructerc"), ("score-prefix", "dialogue-prefix"), ("score-incremental", "dialogue-prefix")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-model", type=Path, required=True, help="a model directory trained on the instructerc template")
    parser.add_argument("--prefix-model", type=Path, required=True, help="a model directory trained on the dialogue-prefix template")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dialogues", type=int, help="only the first N MELD test dialogues (default: all 280)")
    parser.add_argument("--routes", nargs="+", default=[r for r, _ in ROUTES], choices=[r for r, _ in ROUTES])
    parser.add_argument("--route", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.route:
        child(args)
        return
    results = {}
    for route in args.routes:
        command = [sys.executable, __file__, "--route", route, "--paper-model", str(args.paper_model), "--prefix-model", str(args.prefix_model), "--data", str(args.data)]
        if args.dialogues:
            command += ["--dialogues", str(args.dialogues)]
        done = subprocess.run(command, capture_output=True, text=True)
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            sys.exit(f"{route} failed:\n{done.stderr[-3000:]}")
        results[route] = json.loads(line[len("RESULT "):])
        r = results[route]
        print(f"{route:18} {r['template']:16} {r['utterances'] / r['seconds']:8.2f} utt/s  {r['seconds']:8.1f} s  peak RSS {r['peak_rss_mb']:6.0f} MB  invalid {r['invalid']}/{r['utterances']}", flush=True)
    if "naive" in results:
        naive = results["naive"]["utterances"] / results["naive"]["seconds"]
        for route, r in results.items():
            print(f"{route:18} {r['utterances'] / r['seconds'] / naive:6.1f}x the naive route")


if __name__ == "__main__":
    main()
