"""Making a backbone trainable: LoRA adapters through peft, or every weight."""

from __future__ import annotations

from typing import Any


def make_trainable(model: Any, method: str, lora: Any) -> Any:
    """Wrap ``model`` with LoRA adapters (``method='lora'``) or unfreeze it (``'full'``)."""
    if method == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

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
    return get_peft_model(model, config)


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
