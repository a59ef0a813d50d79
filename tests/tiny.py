"""Tiny models built from a config, for tests: a byte-level BPE tokenizer and a 2-layer Llama."""

from __future__ import annotations

import json
import random
from pathlib import Path

CORPUS = [
    "happy sad neutral angry excited frustrated surprise fear joyful disgust anger sadness joy",
    "Joyful Mad Peaceful Neutral Sad Powerful Scared mad peaceful powerful scared",
    "Now you are expert of sentiment and emotional analysis. The following conversation noted between '### ###' involves several speakers.",
    "Please select the emotional label of the utterance from. Here is a demonstration: the utterance has the emotional label.",
    "Speaker_0 Speaker_1 Speaker_2 Ann Bob Cat: Hi! How are you? I am fine, thanks. Oh no, that is terrible. Great news!",
    "Based on the above historical utterances, next utterance is spoken by, please predict the emotion states of",
    "Label the emotion of each utterance with one of. The emotional label of the last utterance is:",
]


def tiny_tokenizer(vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>")


def tiny_backbone(directory: Path, seed: int = 0, layers: int = 2) -> Path:
    """Save a tiny random Llama and its tokenizer to ``directory``; returns it (usable as backbone.model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_model_dir(directory: Path, label_set, template=None, max_length: int = 512) -> Path:
    """A complete instructerc model directory around an untrained tiny backbone (full fine-tuning layout)."""
    from instructerc.modeling.backbone import BackboneConfig
    from instructerc.modeling.model_dir import Manifest
    from instructerc.prompts.setup import PromptSetup
    from instructerc.prompts.templates import TemplateConfig
    from instructerc.retrieval.index import RetrievalConfig

    tiny_backbone(directory)
    Manifest(backbone=BackboneConfig(model=str(directory)), method="full").save(directory)
    template = template or TemplateConfig(name="dialogue-prefix", demonstration=False)
    PromptSetup(template, label_set, max_length, RetrievalConfig()).save(directory)
    return directory


# Dialogues for training tests: short utterances of three emotions, seeded.
EXAMPLES = {
    "joy": ["Great news!", "I love it!", "Wonderful, thanks!"],
    "sadness": ["Oh no, that is terrible.", "I miss her.", "So sad."],
    "neutral": ["Hi.", "How are you?", "I am fine."],
}


def write_split(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            utterances = []
            for _ in range(rng.randint(2, 5)):
                emotion = rng.choice(sorted(EXAMPLES))
                utterances.append({"speaker": rng.choice(["Ann", "Bob", "Cat"]), "text": rng.choice(EXAMPLES[emotion]), "emotion": emotion})
            handle.write(json.dumps({"id": f"{path.stem}{i}", "utterances": utterances}) + "\n")


def write_tiny_base(root: Path, splits: dict[str, int], **sections: dict) -> Path:
    """``root/base.yaml``: a LoRA recipe over a tiny backbone (``root/backbone``) and JSONL splits of
    ``splits`` dialogues each in ``root/data`` (seeds 1, 2, 3... in order); ``sections`` update the
    recipe's sections (``optim={"micro_batch_size": 4}``)."""
    import yaml

    data = root / "data"
    data.mkdir()
    for seed, (split, count) in enumerate(splits.items(), start=1):
        write_split(data / f"{split}.jsonl", count, seed=seed)
    recipe = {
        "data": {"dataset": "jsonl", "path": str(data), "label_set": "meld"},
        "backbone": {"model": str(tiny_backbone(root / "backbone"))},
        "template": {"name": "dialogue-prefix", "demonstration": False},
        "finetune": {"method": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj"]}},
        "optim": {"lr": 0.01, "batch_size": 8, "micro_batch_size": 8},
        "stages": [{"tasks": {"erc": 1.0}, "epochs": 1}],
    }
    for section, values in sections.items():
        recipe[section] = {**recipe[section], **values}
    (root / "base.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return root / "base.yaml"


class Words:
    """A stand-in tokenizer for prompt budgets: one token per word."""

    eos_token_id = 1

    def __call__(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [2] * len(text.split())}

    def decode(self, ids: list[int]) -> str:
        return " ".join("w" for _ in ids)
