"""Sharded training with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Each transformer block, and then the whole model, becomes one FSDP unit: every process keeps
1/N of the parameters, their gradients and their AdamW state, and gathers a block's full
weights only while it computes that block. The trainer shards the model here itself rather
than through ``accelerator.prepare``: accelerate 1.16 applies FSDP on GPUs only, and the loop
has to control two things accelerate does not, gathering the weights once for dev scoring
(:func:`gathered`) and writing sharded checkpoints (:func:`save_sharded`). When the run is
launched with accelerate's FSDP config (``recipes/accelerate/fsdp.yaml``), its settings
(resharding, CPU offload, block classes) are read from accelerate's plugin.

Checkpoints go through ``torch.distributed.checkpoint``: each process writes its own shards, in
parallel, and a checkpoint can be read back by any number of processes. The model directory a
run ends with is a plain one (full weights, written by the main process), which ``predict``
loads on one device.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from instructerc.errors import InputError
from instructerc.training.checkpoint import refuse_misfit


@dataclass(frozen=True)
class FsdpSettings:
    """How the model is sharded.

    Attributes:
        reshard_after_forward: free a block's gathered weights after its forward (gathered
            again for the backward): less memory, one more all-gather per block and step.
        param_dtype: the type weights are gathered and computed in (``bfloat16`` for mixed
            precision); ``None`` keeps the stored float32. Gradients are reduced in float32.
        cpu_offload: keep the shards, gradients and optimizer state in host memory.
        block_classes: class names of the blocks that become FSDP units; empty: the model's own
            ``_no_split_modules`` (its transformer blocks).
    """

    reshard_after_forward: bool = True
    param_dtype: str | None = None
    cpu_offload: bool = False
    block_classes: tuple[str, ...] = ()


def settings_for(accelerator: Any, precision: str, reshard_after_forward: bool) -> FsdpSettings:
    """The run's settings: the recipe's, overridden by accelerate's FSDP plugin when the run was
    launched with an accelerate FSDP config."""
    param_dtype = precision if precision in ("bfloat16", "float16") else None
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None:
        return FsdpSettings(reshard_after_forward=reshard_after_forward, param_dtype=param_dtype)
    if getattr(plugin, "fsdp_version", 1) != 2:
        raise InputError(
            "FSDP1 is not supported: set fsdp_version: 2 in the accelerate config (see recipes/accelerate/fsdp.yaml)",
            field="fsdp_config.fsdp_version",
        )
    from torch.distributed.fsdp import CPUOffloadPolicy

    ignored = [name for name in ("activation_checkpointing", "cpu_ram_efficient_loading") if getattr(plugin, name, False)]
    if ignored and accelerator.is_main_process:
        print(f"accelerate's FSDP settings not applied by this trainer: {', '.join('fsdp_' + n for n in ignored)}")
    reshard = plugin.reshard_after_forward
    return FsdpSettings(
        reshard_after_forward=reshard if isinstance(reshard, bool) else reshard_after_forward,
        param_dtype=param_dtype,
        cpu_offload=isinstance(plugin.cpu_offload, CPUOffloadPolicy),
        block_classes=tuple(plugin.transformer_cls_names_to_wrap or ()),
    )


def block_classes(model: Any, settings: FsdpSettings) -> set[str]:
    """The class names of the model's blocks to shard one by one."""
    from instructerc.modeling.wrappers import underlying_model

    names = set(settings.block_classes) or set(getattr(underlying_model(model), "_no_split_modules", None) or ())
    present = {type(module).__name__ for module in model.modules()}
    found = names & present
    if not found:
        raise InputError(
            f"no transformer blocks to shard: the model has no modules of classes {sorted(names) or '(none named)'}; "
            "name them in the accelerate config (fsdp_transformer_layer_cls_to_wrap)",
            field="fsdp_transformer_layer_cls_to_wrap",
        )
    return found


def shard_model(model: Any, settings: FsdpSettings, device: Any, world: int) -> Any:
    """Apply FSDP2 to ``model`` in place (each block, then the root) over ``world`` processes."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    param_dtype = getattr(torch, settings.param_dtype) if settings.param_dtype else None
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    offload = CPUOffloadPolicy() if settings.cpu_offload else OffloadPolicy()
    classes = block_classes(model, settings)
    blocks = [module for module in model.modules() if type(module).__name__ in classes]
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=settings.reshard_after_forward, mp_policy=policy, offload_policy=offload)
    # The root keeps what lies outside the blocks (embeddings, final norm, head; tied weights
    # stay in one unit) and is not resharded after forward: the backward needs it first.
    fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=policy, offload_policy=offload)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def fsdp_units(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [module for module in model.modules() if isinstance(module, FSDPModule)]


@contextmanager
def gathered(model: Any, settings: FsdpSettings) -> Iterator[Any]:
    """The model with every unit's full weights gathered on every process, for inference.

    Inside, forward passes run no collectives, so each process may score its own share of dev
    (a different number of forward passes); on leaving, the per-iteration state those passes
    left is cleared and the weights are sharded again. Peak memory: the full weights in
    ``param_dtype``, on top of the shards.
    """
    units = fsdp_units(model)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        for unit in units:  # the same order on every process: modules() is deterministic
            unit.unshard()
        yield model
    finally:
        model.reset_iter_state()  # reshards every unit and forgets the inference passes
        for unit in units:
            unit.set_reshard_after_forward(settings.reshard_after_forward and unit is not model, recurse=False)


@contextmanager
def accumulating(model: Any, last: bool) -> Iterator[None]:
    """Skip the gradient reduce-scatter on micro-batches before the last of a step (the sharded
    gradients accumulate locally and are reduced once)."""
    if last:
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _options(full: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Frozen weights (the base model under LoRA) are not saved: they are the backbone's.
    return StateDictOptions(full_state_dict=full, cpu_offload=full, ignore_frozen_params=not full, strict=False)


def save_sharded(directory: Path, model: Any, optimizer: Any = None) -> None:
    """Every process writes its shards of the trainable weights (and of the optimizer state)
    under ``directory``; collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        state = {"model": get_model_state_dict(model, options=_options())}
    else:
        weights, optim = get_state_dict(model, optimizer, options=_options())
        state = {"model": weights, "optimizer": optim}
    dcp.save(state, checkpoint_id=str(directory))


def load_sharded(directory: Path, model: Any, optimizer: Any = None) -> None:
    """Read shards written by :func:`save_sharded` into ``model`` (and ``optimizer``); collective.
    Any number of processes can read what any number wrote.

    A checkpoint that is damaged or does not fit the model is an :class:`InputError` naming the
    file, the same on every process and before any of them starts reading, so no process waits
    for another one that has stopped."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict

    from instructerc.training.sharded_reading import DataOnlyLoadPlanner, IndexCheckingReader

    metadata = _read_index(directory)
    _check_shard_files(directory, metadata)
    _check_weights_fit(directory, metadata, model)
    # A checkpoint is a file a user may be handed: read without letting its pickles run code.
    safely = {"storage_reader": IndexCheckingReader(str(directory)), "planner": DataOnlyLoadPlanner()}
    try:
        if optimizer is None:
            state = {"model": get_model_state_dict(model, options=_options())}
            dcp.load(state, **safely)
            set_model_state_dict(model, state["model"], options=_options())
            return
        weights, optim = get_state_dict(model, optimizer, options=_options())
        state = {"model": weights, "optimizer": optim}
        dcp.load(state, **safely)
    except CheckpointException as error:  # a BaseException: it would pass every error handler as a traceback
        raise InputError(f"cannot read the sharded checkpoint ({_first_failure(error)})", path=directory) from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=_options())


def _read_index(directory: Path) -> Any:
    """The checkpoint's ``.metadata`` (what each tensor is and which file holds it)."""
    import pickle

    from instructerc.training.sharded_reading import INDEX_FILE, read_index

    index = directory / INDEX_FILE
    if not index.is_file():
        raise InputError("sharded checkpoint without its .metadata (cut short while saving?)", path=directory)
    try:
        metadata = read_index(directory)
    except (pickle.UnpicklingError, EOFError, OSError, AttributeError, ImportError, IndexError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"corrupt checkpoint file ({_one_line(error)}): {_REMEDY}", path=index) from None
    tables = (getattr(metadata, "state_dict_metadata", None), getattr(metadata, "storage_data", None))
    if not all(isinstance(table, dict) for table in tables):
        raise InputError(f"not a torch.distributed.checkpoint index: {_REMEDY}", path=index)
    return metadata


_REMEDY = "delete this checkpoint to resume from an earlier one, or start the run afresh"


def _check_shard_files(directory: Path, metadata: Any) -> None:
    """Refuses a shard file that is missing or shorter than the index says: the read would fail
    on the process that owns it, as a traceback (copied or saved only in part)."""
    needed: dict[str, int] = {}
    for where in metadata.storage_data.values():
        name, end = getattr(where, "relative_path", None), getattr(where, "offset", 0) + getattr(where, "length", 0)
        if isinstance(name, str):
            needed[name] = max(needed.get(name, 0), end)
    for name, size in sorted(needed.items()):
        file = directory / name
        try:
            actual = file.stat().st_size
        except FileNotFoundError:
            raise InputError(f"a shard file of this checkpoint is missing: {_REMEDY}", path=file) from None
        if actual < size:
            raise InputError(f"shard file cut short ({actual} bytes of at least {size}): {_REMEDY}", path=file)


def _check_weights_fit(directory: Path, metadata: Any, model: Any) -> None:
    """Refuses shards that are not exactly ``model``'s trainable tensors, as a data-parallel
    resume does: a resume with ``--force`` under another LoRA rank or target modules would fail
    deep in the read, or (weights the model lacks) be left out without a word."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    prefix = "model."
    saved = {
        name[len(prefix) :]: tuple(entry.size)
        for name, entry in metadata.state_dict_metadata.items()
        if name.startswith(prefix) and getattr(entry, "size", None) is not None
    }
    current = {name: tuple(tensor.shape) for name, tensor in get_model_state_dict(model, options=_options()).items()}
    missing = [name for name in current if name not in saved]
    foreign = [name for name in saved if name not in current]
    reshaped = [
        f"{name} ({'x'.join(map(str, saved[name]))} saved, {'x'.join(map(str, shape))} now)"
        for name, shape in current.items()
        if name in saved and saved[name] != shape
    ]
    refuse_misfit(missing, foreign, reshaped, directory)


def _first_failure(error: Any) -> str:
    """One line from the first failing process of a ``CheckpointException``."""
    failures = getattr(error, "failures", None) or {}
    for failure in failures.values():
        cause = failure[0] if isinstance(failure, tuple) else failure
        return _one_line(cause)
    return "unreadable"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__


def full_state(model: Any) -> dict[str, Any]:
    """Every weight, whole, in host memory of the main process (empty elsewhere); collective.

    A tied weight (input and output embeddings) is listed once, under its first name, as the
    model's own ``save_pretrained`` writes it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(full=True))
    first = set(dict(model.named_parameters()))
    repeated = {name for name, _ in model.named_parameters(remove_duplicate=False)} - first
    return {name: tensor for name, tensor in state.items() if name not in repeated}


def local_bytes(model: Any, optimizer: Any) -> dict[str, int]:
    """Bytes of parameters and optimizer state this process holds (its shards under FSDP), and
    its peak resident memory so far."""
    import resource
    import sys

    from torch.distributed.tensor import DTensor

    def size(tensor: Any) -> int:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        return local.numel() * local.element_size()

    parameters = sum(size(p) for p in model.parameters())
    gradients = sum(size(p.grad) for p in model.parameters() if p.grad is not None)
    optim = sum(size(v) for state in optimizer.state.values() for v in state.values() if hasattr(v, "element_size") and v.dim() > 0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"parameter_bytes": parameters, "gradient_bytes": gradients, "optimizer_bytes": optim, "peak_rss_bytes": peak}
