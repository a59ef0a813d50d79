"""Making a backbone trainable: LoRA adapters through peft, or every weight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instructerc.errors import InputError
from instructerc.modeling.backbone import saved_tensors
from instructerc.modeling.word_dropout import use_word_dropout

_FIELD = "finetune.init_adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # what peft's save_pretrained writes
# Kinds of tensor a trained adapter holds; peft would cast integers silently, to weights of 0.
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_EMBEDDING_LAYERS = ("embed_tokens", "lm_head")


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
    check_rank(model, lora.target_modules, lora.r)
    layers = None
    if lora.top_layers is not None:
        count = model.config.num_hidden_layers
        _check_top_layers(lora.top_layers, count)
        layers = list(range(count - lora.top_layers, count))
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


def check_top_layers(method: str, lora: Any, model_path: str, trust_remote_code: bool) -> None:
    """Refuses more LoRA ``top_layers`` than the backbone has from its config alone, before the
    weights load (minutes for a large model). A config that cannot be read here is left to the
    load, which reports it."""
    if method != "lora" or lora.top_layers is None:
        return
    from transformers import AutoConfig

    try:
        count = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code).num_hidden_layers
    except Exception:  # transformers' errors for a config it cannot read vary (OSError, ValueError, KeyError...)
        return
    if isinstance(count, int):
        _check_top_layers(lora.top_layers, count)


def _check_top_layers(top_layers: int, count: int) -> None:
    if top_layers > count:
        # Taken as "all layers" it would train another adapter than the recipe says.
        raise InputError(f"top_layers is {top_layers} but the model has {count} layers", field="finetune.lora.top_layers")


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


def check_rank(model: Any, targets: list[str], rank: int) -> None:
    """Refuses a LoRA rank above what an adapted layer can hold (the smaller side of its weight):
    it adds weights and no expressiveness, and a huge one fails deep in an allocation."""
    adapted = [
        (name, tuple(module.weight.shape[:2]))
        for name, module in model.named_modules()
        if any(name == t or name.endswith(f".{t}") for t in targets) and getattr(module, "weight", None) is not None
    ]
    if not adapted:
        return
    name, shape = min(adapted, key=lambda item: min(item[1]))
    if rank > min(shape):
        raise InputError(
            f"r is {rank}, more than the rank of {name} ({shape[0]} x {shape[1]}): at most {min(shape)}",
            field="finetune.lora.r",
        )


def adapter_folder(name: str) -> Path:
    """The folder ``init_adapter`` names: ``default`` is the model shipped in the package."""
    if name == "default":
        from instructerc.modeling.default_model import default_model_dir

        return default_model_dir()
    folder = Path(name).expanduser()
    if not (folder / ADAPTER_CONFIG).is_file():
        raise InputError(f"not a LoRA adapter folder (it has no {ADAPTER_CONFIG})", path=folder, field=_FIELD)
    return folder


def load_adapter_weights(model: Any, folder: Path, config: Any) -> None:
    """Copy a saved adapter's weights into ``model``'s adapters, refusing one of another shape
    (a partial start would silently train from a mixture)."""
    from peft.utils import set_peft_model_state_dict

    saved = read_adapter_config(folder, _FIELD)
    wanted = {
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": sorted(config.target_modules),
        "layers_to_transform": config.layers_to_transform,
    }
    found = {
        "r": saved.r,
        "lora_alpha": saved.lora_alpha,
        "target_modules": sorted([saved.target_modules] if isinstance(saved.target_modules, str) else saved.target_modules or []),
        "layers_to_transform": saved.layers_to_transform,
    }
    different = [f"{key} {found[key]} (the recipe has {wanted[key]})" for key in wanted if found[key] != wanted[key]]
    if different:
        raise InputError(f"the adapter differs from finetune.lora: {'; '.join(different)}", path=folder, field=_FIELD)
    set_peft_model_state_dict(model, checked_adapter_weights(model, folder, _FIELD))


def attach_adapter(model: Any, folder: Path) -> Any:
    """``model`` wrapped with the LoRA adapter saved in ``folder``, for inference.

    Built from the adapter's config, then loaded only once every saved tensor is checked against
    it: peft's own loader copies what matches, warns about missing weights and ignores foreign
    ones, so a damaged adapter would predict from partly untrained weights with exit code 0."""
    from peft import get_peft_model
    from peft.utils import set_peft_model_state_dict

    config = read_adapter_config(folder)
    config.inference_mode = True
    # The manifest chose the backbone; peft would warn that the path recorded at training differs.
    config.base_model_name_or_path = model.__dict__.get("name_or_path") or None
    saved_tensors(folder / ADAPTER_WEIGHTS)  # a cut-short file is said before the backbone is touched
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as error:  # peft: target modules or layers the backbone lacks
        raise InputError(f"the adapter does not fit its backbone: {_one_line(error)}", path=folder / ADAPTER_CONFIG) from None
    set_peft_model_state_dict(wrapped, checked_adapter_weights(wrapped, folder))
    return wrapped.eval()


def read_adapter_config(folder: Path, field: str | None = None) -> Any:
    """The peft config saved in ``folder``'s ``adapter_config.json``: a LoRA one, its shape keys
    of the right types, or an :class:`InputError` naming the file and the key (peft raises raw
    KeyErrors and TypeErrors, or compares a string rank with a number deep in the wrapping)."""
    from peft import PeftConfig

    file = folder / ADAPTER_CONFIG
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InputError("missing: a LoRA adapter folder holds its config here", path=file, field=field) from None
    except (OSError, ValueError) as error:
        raise InputError(f"not a readable adapter config ({_one_line(error)})", path=file, field=field) from None
    problem = _adapter_config_problem(data)
    if problem is not None:
        raise InputError(problem, path=file, field=field)
    try:
        # From the data read here: from_pretrained would ask the Hub, should the file vanish meanwhile.
        return PeftConfig.from_peft_type(**PeftConfig.check_kwargs(**data))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise InputError(f"not a valid adapter config ({_one_line(error)})", path=file, field=field) from None


def _adapter_config_problem(data: Any) -> str | None:
    """What makes ``data`` no LoRA adapter config instructerc can load, or None."""
    if not isinstance(data, dict):
        return f"an adapter config is a JSON object, not {type(data).__name__}"
    if data.get("peft_type") != "LORA":
        return f"key 'peft_type' is {data.get('peft_type')!r}: instructerc loads LoRA adapters (peft_type LORA) only"
    if not _is_int(data.get("r")) or data["r"] < 1:
        return f"key 'r' (the LoRA rank) must be a positive integer, not {data.get('r')!r}"
    alpha = data.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        return f"key 'lora_alpha' must be a number, not {alpha!r}"
    targets = data.get("target_modules")
    if not isinstance(targets, str) and not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        return f"key 'target_modules' must be a layer name or a list of them, not {targets!r}"
    layers = data.get("layers_to_transform")
    if not (layers is None or _is_int(layers) or (isinstance(layers, list) and all(_is_int(n) for n in layers))):
        return f"key 'layers_to_transform' must be null, a layer number or a list of them, not {layers!r}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_adapter_weights(model: Any, folder: Path, field: str | None = None) -> dict[str, Any]:
    """The adapter weights saved in ``folder``, once they are exactly the adapter weights of
    ``model`` (a peft model): every one present, none foreign, each of its shape and a float."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    file = folder / ADAPTER_WEIGHTS
    saved = saved_tensors(file, field)
    # save_embedding_layers=False: peft's "auto" asks the Hub whether the vocabulary was resized.
    expected = {name: tuple(t.shape) for name, t in get_peft_model_state_dict(model, save_embedding_layers=False).items()}
    problems = _weight_problems(saved, expected)
    if problems:
        raise InputError(f"the adapter weights do not fit its config and backbone: {'; '.join(problems)}", path=file, field=field)
    return load_file(str(file))


def _weight_problems(saved: dict[str, tuple[tuple[int, ...], str]], expected: dict[str, tuple[int, ...]]) -> list[str]:
    """What differs between saved tensors and the ones the model expects, one phrase per kind."""
    # An adapter trained with embedding layers among its targets also keeps their full weights.
    embeddings = tuple(f"{layer}.weight" for layer in _EMBEDDING_LAYERS)
    kinds = {
        "missing": [n for n in expected if n not in saved],
        "not in this adapter's layers": [n for n in saved if n not in expected and not n.endswith(embeddings)],
        "of another shape": [
            f"{n} ({_dims(saved[n][0])} saved, {_dims(expected[n])} expected)"
            for n in expected
            if n in saved and saved[n][0] != expected[n]
        ],
        "not floating point": [f"{n} ({dtype})" for n, (_, dtype) in saved.items() if dtype not in _FLOAT_DTYPES],
    }
    return [f"{len(names)} {what}, e.g. {names[0]}" for what, names in kinds.items() if names]


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


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
