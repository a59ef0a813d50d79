"""Making a backbone trainable: LoRA adapters through peft, or every weight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instructerc.errors import InputError
from instructerc.modeling.word_dropout import use_word_dropout

_FIELD = "finetune.init_adapter"


def make_trainable(model: Any, method: str, lora: Any, init_adapter: str | None = None) -> Any:
    """Wrap ``model`` with LoRA adapters (``method='lora'``) or unfreeze it (``'full'``). The
    adapters' dropout draws its CPU masks from random words (:mod:`instructerc.modeling.word_dropout`).

    ``init_adapter``: a folder holding a LoRA adapter of the same shape, whose weights the new
    adapters start from (``default``: the shipped default model)."""
    if method == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, lora.target_modules)
    layers = None
    if lora.top_layers is not None:
        count = model.config.num_hidden_layers
        layers = list(range(max(0, count - lora.top_layers), count))
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    use_word_dropout(model)
    if init_adapter is not None:
        load_adapter_weights(model, adapter_folder(init_adapter), config)
    return model


def linear_layers(model: Any) -> dict[str, str]:
    """Dotted name -> leaf name of every Linear layer, counting transformers' Conv1D, which
    GPT-2-style models use as their Linear."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return {name: name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, Conv1D))}


def check_target_modules(model: Any, targets: list[str]) -> None:
    """Refuses a target that names no layer LoRA can adapt, listing the Linear layers there are
    (peft raises a traceback, after the model has loaded)."""
    import torch

    adaptable = set(linear_layers(model))
    # peft also adapts embeddings, though recipes rarely ask for it.
    adaptable |= {name for name, module in model.named_modules() if isinstance(module, torch.nn.Embedding)}
    # peft matches a target as the whole dotted name or as a suffix after a dot.
    unknown = [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in adaptable)]
    if unknown:
        names = ", ".join(sorted(set(linear_layers(model).values())))
        raise InputError(
            f"the model has no layer named {', '.join(unknown)} to adapt; its Linear layers are: {names}",
            field="finetune.lora.target_modules",
        )


def adapter_folder(name: str) -> Path:
    """The folder ``init_adapter`` names: ``default`` is the model shipped in the package."""
    if name == "default":
        from instructerc.modeling.default_model import default_model_dir

        return default_model_dir()
    folder = Path(name).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise InputError("not a LoRA adapter folder (it has no adapter_config.json)", path=folder, field=_FIELD)
    return folder


def load_adapter_weights(model: Any, folder: Path, config: Any) -> None:
    """Copy a saved adapter's weights into ``model``'s adapters, refusing one of another shape
    (a partial start would silently train from a mixture)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    saved = json.loads((folder / "adapter_config.json").read_text())
    wanted = {
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": sorted(config.target_modules),
        "layers_to_transform": config.layers_to_transform,
    }
    found = {
        "r": saved.get("r"),
        "lora_alpha": saved.get("lora_alpha"),
        "target_modules": sorted(saved.get("target_modules") or []),
        "layers_to_transform": saved.get("layers_to_transform"),
    }
    different = [f"{key} {found[key]} (the recipe has {wanted[key]})" for key in wanted if found[key] != wanted[key]]
    if different:
        raise InputError(f"the adapter differs from finetune.lora: {'; '.join(different)}", path=folder, field=_FIELD)
    try:
        weights = load_peft_weights(str(folder), device="cpu")
        result = set_peft_model_state_dict(model, weights)
    except (OSError, RuntimeError, ValueError) as error:
        raise InputError(f"its adapter weights do not load: {' '.join(str(error).split())[:300]}", path=folder, field=_FIELD) from None
    if result.unexpected_keys:
        raise InputError(
            f"the adapter has {len(result.unexpected_keys)} weights this model lacks, e.g. {result.unexpected_keys[0]}",
            path=folder,
            field=_FIELD,
        )
    missing = [key for key in result.missing_keys if "lora_" in key]
    if missing:
        raise InputError(f"the adapter lacks {len(missing)} LoRA weights, e.g. {missing[0]}", path=folder, field=_FIELD)


def trainable_state(model: Any) -> dict[str, Any]:
    """The trainable tensors by name (what a checkpoint must keep)."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    import torch

    parameters = dict(model.named_parameters())
    missing = [name for name, p in parameters.items() if p.requires_grad and name not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor.to(parameters[name].device, parameters[name].dtype))


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
