"""The training configuration: what a recipe YAML file holds."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from instructerc.config import from_mapping, read_yaml, to_mapping, yaml_line
from instructerc.data.registry import DataSource
from instructerc.errors import InputError
from instructerc.labels.registry import named_label_set
from instructerc.modeling.backbone import BackboneConfig
from instructerc.prompts.example import Task
from instructerc.prompts.tasks import SPEAKER_VARIANTS
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig


@dataclass(frozen=True)
class DataConfig:
    """Training data.

    Attributes:
        dataset: a registered dataset name (``meld``, ``uime``, ``jsonl``...).
        path: its data root, folder or file (relative paths are relative to the working directory).
        labels: ``original``, ``uime`` or ``uime:feeling-wheel``.
        label_set: JSONL only: the label set its emotions follow.
        fraction: train on this stratified fraction of the training dialogues (data scaling).
        dataset_fractions: per source dataset, a fraction that replaces ``fraction`` (unified
            training: e.g. fewer of IEMOCAP's long scenes, more of MELD's short ones).
        max_dev_dialogues: evaluate on at most this many dev dialogues of each source dataset (a fixed, seeded subset); null: all.
    """

    dataset: str = "meld"
    path: str | None = None
    labels: str = "original"
    label_set: str | None = None
    fraction: float = 1.0
    dataset_fractions: dict[str, float] = field(default_factory=dict)
    max_dev_dialogues: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise InputError("fraction must be in (0, 1]", field="data.fraction")
        for name, share in self.dataset_fractions.items():
            if not 0 < share <= 1:
                raise InputError(f"the fraction of '{name}' must be in (0, 1]", field=f"data.dataset_fractions.{name}")
        if self.max_dev_dialogues is not None and self.max_dev_dialogues < 1:
            raise InputError("max_dev_dialogues must be at least 1 (or null: all)", field="data.max_dev_dialogues")
        # Checked here, not when the data is read: there the error named neither the recipe nor
        # the recipe key ("field 'dataset': unknown dataset 'MELD'").
        try:
            self.source()
            if self.label_set is not None:
                # Else looked up only as the run reads its data, and named there as 'label_set'.
                named_label_set(self.label_set)
        except InputError as error:
            raise InputError(error.message, field=f"data.{error.field}" if error.field else "data") from None

    def fraction_of(self, dataset: str) -> float:
        """The training fraction for dialogues of one source dataset."""
        return self.dataset_fractions.get(dataset, self.fraction)

    def source(self) -> DataSource:
        # The text as written: DataSource refuses an empty path, which here read as none at all.
        return DataSource(name=self.dataset, path=self.path, labels=self.labels, label_set=self.label_set)


@dataclass(frozen=True)
class StageConfig:
    """One training stage: a mix of tasks, trained for some epochs from the previous stage's weights.

    Attributes:
        tasks: task -> share of the eligible utterances used (1.0: every utterance, 0.5: a seeded
            half). Tasks: ``erc``, ``speaker``, ``emotion_prediction``.
        epochs: passes over this stage's examples.
    """

    tasks: dict[str, float] = field(default_factory=lambda: {"erc": 1.0})
    epochs: float = 1.0

    def __post_init__(self) -> None:
        known = {t.value for t in Task}
        # A stage without tasks has no examples, so it would take no step and pass unnoticed.
        if not self.tasks:
            raise InputError(
                f"a stage needs at least one task, e.g. {{erc: 1.0}} (known: {', '.join(sorted(known))})", field="stages.tasks"
            )
        for task, share in self.tasks.items():
            if task not in known:
                raise InputError(f"unknown task '{task}' (known: {', '.join(sorted(known))})", field="stages.tasks")
            if not 0 < share <= 1:
                raise InputError(f"the share of '{task}' must be in (0, 1]", field=f"stages.tasks.{task}")
        if not 0 < self.epochs < math.inf:
            raise InputError(f"epochs must be a positive number, got {self.epochs}", field="stages.epochs")

    @property
    def evaluates_erc(self) -> bool:
        return Task.ERC.value in self.tasks


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters (peft). The paper: r=16, alpha=16, dropout 0.05 on q/k/v of every layer.

    Attributes:
        top_layers: adapt only the last N transformer layers (null: all). Backpropagation then
            stops at the lowest adapted layer, which on a CPU saves about a third of a step
            when N is half the layers.
    """

    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])
    top_layers: int | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise InputError(f"r must be >= 1, got {self.r}", field="finetune.lora.r")
        if not self.alpha > 0:
            raise InputError(f"alpha must be positive, got {self.alpha}", field="finetune.lora.alpha")
        if not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}", field="finetune.lora.dropout")
        if self.top_layers is not None and self.top_layers < 1:
            raise InputError("top_layers must be >= 1", field="finetune.lora.top_layers")
        # peft would fail only after the model has loaded, and an empty list adapts nothing.
        if not self.target_modules or not all(name.strip() for name in self.target_modules):
            raise InputError(
                "target_modules must name at least one module, e.g. [q_proj, v_proj]; no name may be empty",
                field="finetune.lora.target_modules",
            )


@dataclass(frozen=True)
class FinetuneConfig:
    """How the backbone is fine-tuned.

    Attributes:
        method: ``lora`` or ``full``.
        lora: the adapters, for ``lora``.
        init_adapter: start the adapters from a trained one instead of from zero: a model
            directory written by ``instructerc train`` (or a peft adapter folder), or ``default``
            for the model shipped in the package. It must have ``lora``'s rank, alpha, target
            modules and layers. Continuing a model under a new label set or new data is a new
            run that starts there (``--resume`` continues the same run). For full fine-tuning,
            point ``backbone.model`` at the model instead.
    """

    method: str = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)
    init_adapter: str | None = None

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise InputError("method must be lora or full", field="finetune.method")
        # An empty name would be read as the working directory.
        if self.init_adapter is not None and not self.init_adapter.strip():
            raise InputError(
                "init_adapter must name a model directory or 'default' (null: the adapters start from zero)",
                field="finetune.init_adapter",
            )
        if self.init_adapter is not None and self.method != "lora":
            raise InputError(
                "init_adapter starts LoRA adapters; for full fine-tuning set backbone.model to the model to start from",
                field="finetune.init_adapter",
            )
        if self.method == "full":
            _refuse_unused_lora(self.lora)


def _refuse_unused_lora(lora: LoraConfig) -> None:
    """Full fine-tuning trains every weight and builds no adapter, so a LoRA setting beside it
    (``r: 64`` under ``method: full``) would be dropped without a word. The defaults pass: a run's
    saved config.yaml writes every key."""
    default = LoraConfig()
    for name in (f.name for f in dataclasses.fields(LoraConfig)):
        if getattr(lora, name) != getattr(default, name):
            raise InputError(
                f"{name} is {getattr(lora, name)!r}, but finetune.method is full, which trains every weight and builds no "
                "LoRA adapter: remove finetune.lora (or set it to null), or use method: lora",
                field=f"finetune.lora.{name}",
            )


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation. ``batch_size`` is the global batch in examples (all processes together);
    ``micro_batch_size`` examples are computed at once per process, the rest is accumulated.

    ``class_balance``: weight the loss of each emotion example (ERC and emotion prediction) by
    ``n ** -class_balance``, where ``n`` counts the stage's examples of its task, source dataset and
    gold label, normalised so that these examples' weights average 1. 0 (default): unweighted; 1:
    every label of a dataset weighs the same in total; between: rare labels count more, less
    than fully."""

    lr: float = 2e-4
    batch_size: int = 32
    micro_batch_size: int = 8
    warmup_ratio: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    class_balance: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.class_balance <= 1:
            raise InputError(f"class_balance must be in [0, 1], got {self.class_balance}", field="optim.class_balance")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}", field="optim.batch_size")
        if self.micro_batch_size < 1:
            raise InputError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}", field="optim.micro_batch_size")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError("warmup_ratio must be in [0, 1)", field="optim.warmup_ratio")
        if len(self.betas) != 2:
            raise InputError("betas needs two numbers", field="optim.betas")
        # NaN fails every comparison, so each check is written to pass only for a good value.
        if not 0 < self.lr < math.inf:
            raise InputError(f"lr must be a positive number, got {self.lr}", field="optim.lr")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise InputError(f"betas must be in [0, 1), got {self.betas}", field="optim.betas")
        if not 0 <= self.weight_decay < math.inf:
            raise InputError(f"weight_decay must be >= 0, got {self.weight_decay}", field="optim.weight_decay")
        if not self.max_grad_norm > 0:
            raise InputError(f"max_grad_norm must be > 0 (inf: no clipping), got {self.max_grad_norm}", field="optim.max_grad_norm")


@dataclass(frozen=True)
class PackingConfig:
    """How examples are laid into sequences.

    Attributes:
        shared_prefix: lay the examples of one dialogue into one sequence as a prefix tree, so a
            prefix they share (instruction, history) is computed once; attention masks keep every
            example seeing exactly its own prompt, so the loss is the same as unpacked.
        max_tokens: the most tokens in one packed sequence.
        dialogue_chunk: with ``shared_prefix``, shuffle runs of at most this many consecutive
            examples of a dialogue instead of whole dialogues. Long scenes (IEMOCAP: 50+
            utterances, often one mood) otherwise fill many consecutive steps, and a high learning
            rate chases the latest scene's emotion; chunks cost nothing extra, since a step
            recomputes its prefix anyway. Null keeps whole dialogues together.
        block_sparse_attention: on a CPU, compute the attention of packed rows only over the
            keys each block of queries may see (:mod:`instructerc.modeling.sparse_attention`;
            exact). GPUs keep SDPA's fused kernels.
    """

    shared_prefix: bool = True
    max_tokens: int = 2048
    dialogue_chunk: int | None = None
    block_sparse_attention: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {self.max_tokens}", field="packing.max_tokens")
        if self.dialogue_chunk is not None and self.dialogue_chunk < 1:
            raise InputError("dialogue_chunk must be at least 1 (or null)", field="packing.dialogue_chunk")
        # Chunks are runs of one dialogue's examples; without shared_prefix the examples are
        # shuffled one by one, and the chunk size would be dropped without a word.
        if self.dialogue_chunk is not None and not self.shared_prefix:
            raise InputError(
                "dialogue_chunk applies only with shared_prefix: true (else every example is shuffled alone); remove it or set it null",
                field="packing.dialogue_chunk",
            )


STRATEGIES = ("ddp", "fsdp")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class DistributedConfig:
    """How a run with several processes lays the model over them.

    Attributes:
        strategy: ``ddp``: every process holds the whole model and its optimizer state, gradients
            are averaged (also the one-process case). ``fsdp``: FSDP2 shards parameters,
            gradients and optimizer state over the processes (for backbones or full fine-tuning
            that do not fit one device); see :mod:`instructerc.training.fsdp`. Launching with
            accelerate's FSDP config (``recipes/accelerate/fsdp.yaml``) also selects ``fsdp``.
        reshard_after_forward: FSDP: free each block's gathered weights after its forward.
    """

    strategy: str = "ddp"
    reshard_after_forward: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}", field="distributed.strategy")


def refuse_stages_after_the_last_erc(stages: list[StageConfig]) -> None:
    """Dev is scored only in stages that train erc, and the model is the dev-best weights: a stage
    after the last of them trained steps that no score could select, and the run finished, its
    card listing the stage, with the weights from before it."""
    last = max(index for index, stage in enumerate(stages) if stage.evaluates_erc)
    if last < len(stages) - 1:
        later = stages[last + 1]
        raise InputError(
            f"stage {last + 2} ({' + '.join(later.tasks)}) comes after the last stage that trains erc, and dev is scored only in "
            "stages that train erc: its weights could never be selected. Move it before, or add erc to it",
            field=f"stages[{last + 1}].tasks",
        )


@dataclass(frozen=True)
class TrainConfig:
    """A training run (a recipe). See ``recipes/`` for complete examples.

    Dev evaluation (which selects the checkpoint) runs every ``eval_every_steps`` steps when set,
    else ``evals_per_epoch`` times per epoch of every stage that trains ERC, and always at the end.
    """

    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    speaker_variant: str = "paper"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    packing: PackingConfig = field(default_factory=PackingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    max_length: int = 1024
    eval_every_steps: int | None = None
    evals_per_epoch: int = 1
    checkpoint_every_steps: int = 100
    seed: int = 42
    output_dir: str = "runs/model"

    def __post_init__(self) -> None:
        if not self.stages:
            raise InputError("at least one stage is needed", field="stages")
        if not any(s.evaluates_erc for s in self.stages):
            raise InputError("some stage must train the erc task", field="stages")
        refuse_stages_after_the_last_erc(self.stages)
        if self.speaker_variant not in SPEAKER_VARIANTS:
            raise InputError(f"speaker_variant must be one of {SPEAKER_VARIANTS}", field="speaker_variant")
        if self.max_length < 16:
            raise InputError(f"max_length must be at least 16 tokens, got {self.max_length}", field="max_length")
        if self.evals_per_epoch < 1:
            raise InputError("evals_per_epoch must be >= 1", field="evals_per_epoch")
        if self.eval_every_steps is not None and self.eval_every_steps < 1:
            raise InputError("eval_every_steps must be >= 1", field="eval_every_steps")
        # eval_every_steps wins when set, so another evals_per_epoch (say --set evals_per_epoch=4
        # over a recipe that evaluates every 100 steps) would be dropped without a word. The
        # default (1) stays allowed: a run's saved config.yaml writes every key.
        if self.eval_every_steps is not None and self.evals_per_epoch != 1:
            raise InputError(
                f"evals_per_epoch ({self.evals_per_epoch}) is not used while eval_every_steps is set ({self.eval_every_steps}): "
                "set eval_every_steps to null to evaluate per epoch, or remove evals_per_epoch",
                field="evals_per_epoch",
            )
        if self.checkpoint_every_steps < 1:
            raise InputError("checkpoint_every_steps must be >= 1", field="checkpoint_every_steps")
        # numpy's generator takes 32-bit seeds; outside that range it fails mid-setup.
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed must be in [0, {MAX_SEED}], got {self.seed}", field="seed")
        # An empty output_dir would write the run (and later refuse or overwrite) in the working directory.
        if not self.output_dir.strip():
            raise InputError("output_dir must name a folder for the run", field="output_dir")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        # Checked before the file is read: a list of "key=value" strings (as typed after --set)
        # failed on a bare "'list' object has no attribute 'items'".
        if overrides is not None and not isinstance(overrides, Mapping):
            raise TypeError(f"overrides must be a mapping of dotted key -> value ({{'optim.lr': 1e-4}}), not {type(overrides).__name__}")
        data = read_yaml(path)
        for dotted, value in (overrides or {}).items():
            apply_override(data, dotted, value, path)
        try:
            return from_mapping(cls, data)
        except InputError as error:
            raise InputError(error.message, path=path, line=recipe_line(path, error, overrides or {}), field=error.field) from None

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)


def later_keys() -> tuple[tuple[str, str, Any], ...]:
    """(section, key, default) of the recipe keys added after grids had run, which a run's identity
    (:func:`instructerc.experiments.runner.run_key`) counts only when set. The template's are the
    ones :meth:`TemplateConfig.to_dict` leaves out while off, read from it so the two cannot drift."""
    written = TemplateConfig().to_dict()
    template = tuple(("template", f.name, f.default) for f in dataclasses.fields(TemplateConfig) if f.name not in written)
    return (("finetune", "init_adapter", None), ("optim", "class_balance", 0.0)) + template


Step = str | int


def recipe_line(path: str | Path, error: InputError, overrides: Mapping[str, Any]) -> int | None:
    """The line of the recipe file that holds what ``error`` is about: the field it names, or for
    unknown keys the first such key of the section. None where an override (``--set``, a grid
    axis) gave the field or a section around it: the file's line would be the wrong place."""
    steps = [] if error.field is None else override_steps(error.field)
    if error.message.startswith("unknown key(s)"):
        section = _not_null(hint_at(steps))
        if dataclasses.is_dataclass(section):
            return yaml_line(path, steps, {f.name for f in dataclasses.fields(section)})
    if not steps or any(_overlap(steps, override_steps(key)) for key in overrides):
        return None
    return yaml_line(path, steps)


def _overlap(field: list[Step], given: list[Step]) -> bool:
    """Whether the override at ``given`` sets ``field``, a part of it or a section holding it."""
    given = [int(step) if isinstance(step, str) and step.isascii() and step.isdigit() else step for step in given]
    shorter = min(len(field), len(given))
    return field[:shorter] == given[:shorter]


def merged(current: Any, value: Any, hint: Any = Any) -> Any:
    """``value`` set over ``current``, where ``hint`` is the recipe type of the place they go:
    a mapping given for a section (a group of recipe keys such as ``optim``) merges into it key by
    key, recursively; anything else replaces, including a mapping given for a field whose keys
    are data (``stages[0].tasks``, ``data.dataset_fractions``): merged, such a field could never
    lose a key (``--set 'stages[0].tasks={erc: 1.0}'`` would silently keep the stage's other
    tasks). Neither input is changed."""
    if not (is_section(hint) and isinstance(current, dict) and isinstance(value, dict)):
        return value
    result = dict(current)
    for key, item in value.items():
        result[key] = merged(current.get(key), item, field_hint(hint, key))
    return result


def is_section(hint: Any) -> bool:
    """Whether a recipe place of type ``hint`` is a section: a dataclass (optionally nullable)."""
    return dataclasses.is_dataclass(_not_null(hint))


def field_hint(hint: Any, step: Step) -> Any:
    """The type of the place ``step`` names inside a value of type ``hint``; ``Any`` where the
    recipe has no such place (its own checks then name the key as unknown)."""
    hint = _not_null(hint)
    if dataclasses.is_dataclass(hint):
        return typing.get_type_hints(hint).get(step, Any) if isinstance(step, str) else Any
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple) and (isinstance(step, int) or str(step).isdigit()):
        return args[0] if args else Any
    if origin is dict:
        return args[1] if len(args) == 2 else Any
    return Any


def hint_at(steps: list[Step]) -> Any:
    """The recipe type at ``steps`` (``['stages', 0, 'tasks']`` -> ``dict[str, float]``)."""
    hint: Any = TrainConfig
    for step in steps:
        hint = field_hint(hint, step)
    return hint


def _not_null(hint: Any) -> Any:
    """``X | None`` -> ``X``; any other hint as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint


def apply_override(data: dict[str, Any], dotted: str, value: Any, path: str | Path) -> None:
    """Set ``dotted`` (``optim.lr``; a list item as errors name it, ``stages[0].epochs``, or
    ``stages.0.epochs``) to ``value`` in a recipe's ``data``, in place.

    A mapping given for a section merges into it (``--set 'optim={lr: 0.1}'`` keeps the recipe's
    other optim keys), as the dotted spelling does; any other value replaces what is there
    (see :func:`merged`).

    Every section on the way is copied before it is changed: YAML aliases (``- *stage``) make
    several places of a recipe one object, and an override names only one of them."""
    steps = override_steps(dotted)
    _check_key_spelling(dotted, path)
    node: Any = data
    for depth, step in enumerate(steps):
        place = _place(node, step, steps[: depth + 1], dotted, path)
        if depth == len(steps) - 1:
            current = node[place] if not isinstance(node, dict) else node.get(place)
            node[place] = merged(current, value, hint_at(steps))
            return
        child = node[place] if not isinstance(node, dict) else node.get(place)
        if child is None and holds_keys(hint_at(steps[: depth + 1])):
            child = absent_value(steps[: depth + 1])
        elif isinstance(child, (dict, list)):
            child = type(child)(child)
        else:
            where = step_names(steps[: depth + 1])
            raise InputError(f"'{where}' is not a section of keys, so --set {dotted} cannot go into it", path=path, field=where)
        node[place] = child
        node = child


def holds_keys(hint: Any) -> bool:
    """Whether a recipe place of type ``hint`` can hold keys or items an override goes into: a
    value (``seed``, ``optim.lr``) cannot, even where the recipe leaves it out; taken as an empty
    section, ``--set seed.x=1`` was refused as "expected an integer, got {'x': 1}", an error that
    names no option and sends the reader to a recipe without that value."""
    hint = _not_null(hint)
    return hint is Any or is_section(hint) or typing.get_origin(hint) in (list, tuple, dict)


def absent_value(steps: list[Step]) -> Any:
    """What a place the recipe leaves out (or empties) holds for an override to go into: a
    section's defaults are its own, so an empty one; a list keeps its default items, so
    ``--set stages[0].epochs=2`` reaches the default stage of a recipe that writes no ``stages``
    (it was refused as "not a list")."""
    hint = _not_null(hint_at(steps))
    if typing.get_origin(hint) not in (list, tuple):
        return {}  # an empty section (every key commented out) is a section of defaults
    owner = _not_null(hint_at(steps[:-1]))
    found = [f for f in dataclasses.fields(owner) if f.name == steps[-1]] if dataclasses.is_dataclass(owner) else []
    if found and found[0].default_factory is not dataclasses.MISSING:
        return to_mapping(found[0].default_factory())
    if found and isinstance(found[0].default, (list, tuple)):
        return to_mapping(found[0].default)
    return []  # no default items: an index names none of them


def override_steps(dotted: str) -> list[Step]:
    """``stages[0].epochs`` -> ``['stages', 0, 'epochs']``; a part that is not ``name[i]...`` is a
    plain key, which the recipe's own checks then name as unknown."""
    steps: list[Step] = []
    for part in dotted.split("."):
        match = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])+)", part)
        if match is None:
            steps.append(part)
            continue
        if match.group(1):
            steps.append(match.group(1))
        steps.extend(int(index) for index in re.findall(r"\d+", match.group(2)))
    return steps


def _check_key_spelling(dotted: str, path: str | Path) -> None:
    """Refuses a key with an empty part (``optim..lr``, ``optim.``) or a list index that is not a
    whole number in brackets (``stages[-1]``, ``stages[0``): the recipe's checks would name a key
    ``''`` or ``'stages[-1]'`` as unknown, an error that hides what was mistyped."""
    for part in dotted.split("."):
        if not part.strip():
            raise InputError(f"--set {dotted}: an empty key between dots (write keys as optim.lr or stages[0].epochs)", path=path)
        if ("[" in part or "]" in part) and not re.fullmatch(r"[^\[\]]*(?:\[\d+\])+", part):
            raise InputError(f"--set {dotted}: '{part}' is no list item; an index is a whole number from 0, e.g. stages[0]", path=path)


def _place(node: Any, step: Step, steps: list[Step], dotted: str, path: str | Path) -> Step:
    """Where ``step`` goes in ``node``: a key of a section, or the index of an existing list item."""
    if isinstance(node, dict) and isinstance(step, str):
        return step
    where = step_names(steps[:-1])
    if not isinstance(node, list):
        raise InputError(f"'{where or 'the recipe'}' is not a list, so --set {dotted} cannot index it", path=path, field=where or None)
    if isinstance(step, str) and not (step.isascii() and step.isdigit()):
        raise InputError(f"'{where}' is a list: name one of its items, e.g. --set {where}[0].{step}=...", path=path, field=where)
    index = int(step)
    if index >= len(node):
        raise InputError(f"'{where}' has {len(node)} item(s), so --set {dotted} names none of them", path=path, field=where)
    return index


def step_names(steps: list[Step]) -> str:
    """Steps named as errors name fields: ``stages[0].epochs``."""
    text = ""
    for step in steps:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text
