"""Build the MELD demonstration index with the embedded encoder: cold, then from the cache.

Prints the cold and cached build times, and on MELD dev how often the retrieved demonstration's
label equals the gold (``nearest`` policy, and ``same-label``, which falls back to ``nearest``
at test time) beside the plain nearest neighbour's agreement.

    python benchmarks/retrieval_index.py [--data ../shared/data] [--cache-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _report import check_meld, folder_to_use, output_file, write_json

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data root holding meld/ (default: ../shared/data)")
    parser.add_argument(
        "--cache-dir", type=folder_to_use, help="embedding cache (default: a fresh temporary folder, so the first build is cold)"
    )
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    args = parser.parse_args(argv)
    check_meld(parser, args.data, "train", "dev")

    import numpy as np

    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.retrieval.encoder import SentenceEncoder
    from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig
    from instructerc.retrieval.retriever import DemonstrationRetriever

    own_cache = args.cache_dir is None
    cache_dir = Path(tempfile.mkdtemp(prefix="instructerc-retrieval-")) if own_cache else args.cache_dir
    try:
        source = DataSource("meld", args.data)
        train, dev = load_dialogues(source, "train"), load_dialogues(source, "dev")
        config = RetrievalConfig(cache_dir=str(cache_dir))

        start = time.perf_counter()
        encoder = SentenceEncoder.load(config.encoder)
        loaded = time.perf_counter()
        cpu = time.process_time()
        index = DemonstrationIndex.build(train, encoder, config)
        cold, cold_cpu = time.perf_counter(), time.process_time() - cpu
        cached = DemonstrationIndex.build(train, encoder, config)
        warm = time.perf_counter()
        assert cached.was_cached, "the second build did not reuse the cache"
        np.testing.assert_array_equal(cached.embeddings, index.embeddings)
        state = "cold" if not index.was_cached else "already cached"
        print(f"MELD train index: {len(index)} utterances, encoder {index.encoder_identity}, cache {cache_dir}")
        print(
            f"first build ({state}): {cold - loaded:.2f} s encoding ({cold_cpu:.1f} s CPU) + "
            f"{loaded - start:.2f} s loading the encoder = {cold - start:.2f} s"
        )
        print(f"second build (cached): {warm - cold:.3f} s")
        figures = {
            "train_utterances": len(index),
            "encoder": index.encoder_identity,
            "cache_dir": str(cache_dir),
            "first_build": {
                "state": state,
                "encoder_loading_seconds": loaded - start,
                "encoding_seconds": cold - loaded,
                "encoding_cpu_seconds": cold_cpu,
                "total_seconds": cold - start,
            },
            "cached_build_seconds": warm - cold,
            "dev_demonstration_label_equals_gold": {},
        }

        utterances = [u for d in dev for u in d.utterances]
        gold = [u.emotion for u in utterances]
        keys = [(d.dataset, d.id, i) for d in dev for i in range(len(d))]
        for policy in ("nearest", "same-label"):
            retriever = DemonstrationRetriever(index, encoder, RetrievalConfig(policy=policy, cache_dir=str(cache_dir)))
            shown = retriever.demonstrations(dev, training=False)
            rate = np.mean([key in shown and shown[key].label == g for key, g in zip(keys, gold)])
            print(f"MELD dev ({len(utterances)} utterances), {policy} policy: demonstration label == gold {rate:.4f}")
            figures["dev_demonstration_label_equals_gold"][policy] = rate
        scores = retriever.embed([u.text for u in utterances]) @ index.embeddings.T
        labels, gold_array = np.array([e.label for e in index.entries]), np.array(gold)
        plain_rate = np.mean(labels[scores.argmax(axis=1)] == gold_array)
        tops = scores >= scores.max(axis=1, keepdims=True) - 1e-5  # identical train texts tie
        hits = tops & (labels[None, :] == gold_array[:, None])
        low, high = np.mean(hits.sum(axis=1) == tops.sum(axis=1)), np.mean(hits.any(axis=1))
        print(
            f"MELD dev, plain nearest neighbour (no mask): label == gold {plain_rate:.4f} with the first of tied neighbours, "
            f"{low:.4f}..{high:.4f} over all tie-breaks ({np.mean(tops.sum(axis=1) > 1):.4f} of queries tie)"
        )
        majority = max(set(gold), key=gold.count)
        print(f"MELD dev, majority label '{majority}': {gold.count(majority) / len(gold):.4f}")
        figures.update(
            dev_utterances=len(utterances),
            dev_plain_nearest_label_equals_gold={
                "first_of_tied": plain_rate,
                "all_tie_breaks_low": low,
                "all_tie_breaks_high": high,
                "queries_tied": np.mean(tops.sum(axis=1) > 1),
            },
            dev_majority_label={"label": majority, "rate": gold.count(majority) / len(gold)},
        )
        if args.json:
            write_json(args.json, figures, args)
    finally:
        if own_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
