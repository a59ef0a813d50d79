"""The training loop: multi-stage, multi-task, dev-selected, resumable, distributed through accelerate.

One command runs on one CPU, one GPU, or many under ``accelerate launch`` / ``torchrun``: data
parallel (DDP), or sharded with FSDP2 (``distributed.strategy: fsdp`` or accelerate's FSDP config;
see :mod:`instructerc.training.fsdp`). Per step it computes only what teaches:
prompts of a dialogue are packed as a prefix tree (a shared prefix is computed once) and the
vocabulary projection runs only at target positions. The test split is never read.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructerc.config import to_mapping
from instructerc.data.dialogue import Dialogue
from instructerc.data.published import warnings_held
from instructerc.data.registry import DataSource, label_set_of, load_dialogues
from instructerc.data.sampling import per_dataset_subset, seeded_subset, stable_seed, stratified_fraction
from instructerc.errors import InputError
from instructerc.modeling.model_dir import DEV_METRICS, MANIFEST, TRAINING_CONFIG
from instructerc.prompts.budget import PromptTooLong
from instructerc.prompts.encoding import EncodedExample, SegmentTokenizer
from instructerc.prompts.example import Task
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.tasks import speaker_slots
from instructerc.training.batches import class_weights, collate, epoch_order, micro_batches, shard, steps
from instructerc.training.checkpoint import (
    SHARDED_DIR,
    TrainState,
    begin_checkpoint,
    check_resumable,
    check_weights_fit,
    commit_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    process_rng_state,
    prune_checkpoints,
    read_checkpoint_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    staging_path,
)
from instructerc.training.config import TrainConfig
from instructerc.training.data_checks import (
    check_dataset_fractions,
    check_stage_examples,
    data_changes,
    data_summary,
    datasets_without_dev,
    refuse_changed_data,
    require_a_choice,
    require_labels,
    require_split_folder,
    split_file,
)
from instructerc.training.dev import DevScorer, DevScoring, DevSet
from instructerc.training.run_directory import (
    RunPaths,
    append_line,
    check_run_directory,
    commit_best,
    read_best_dev_metrics,
    read_best_weights,
    record_metrics,
    recover_best,
    run_lock,
    set_aside_earlier_log,
)


def _rng_by_process(accelerator: Any) -> list[dict[str, Any]] | None:
    """Every process's random state, gathered on each (all must call this), for a checkpoint of
    a run of several processes; ``None`` for one process, whose state the checkpoint holds anyway."""
    if accelerator.num_processes == 1:
        return None
    import io

    import torch
    from accelerate.utils import gather_object

    # Gathered as bytes: torch's object collectives fail to unpickle the state's tensors.
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    return [torch.load(io.BytesIO(saved), weights_only=True) for saved in gather_object([buffer.getvalue()])]


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    best_dev_score: float | None
    best_step: int | None
    global_step: int
    dev_metrics: dict[str, Any]
    main_process: bool = True


@dataclass
class _Session:
    """What a run's setup builds and its stages share."""

    accelerator: Any
    model: Any
    setup: PromptSetup
    hf_tokenizer: Any
    train: list[Dialogue]
    train_demos: dict
    retriever: Any
    dev_scorer: DevScorer
    state: TrainState
    optim_state: dict[str, Any] | None  # the optimizer, scheduler and RNG state of a resumed stage
    fsdp: Any = None  # FsdpSettings when the model is sharded
    resumed_from: Path | None = None
    first_stage_examples: list[EncodedExample] | None = None  # stage 0's, encoded before the model loaded

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


@dataclass(frozen=True)
class _StagePlan:
    """One stage's examples and step budget (``stage.epochs`` may be fractional)."""

    index: int
    examples: list[EncodedExample]
    steps_per_epoch: int
    total_steps: int
    weights: list[float] | None = None  # per example, under optim.class_balance; None: all 1

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / max(1, self.steps_per_epoch))

    def done(self, epoch: int, step_in_epoch: int) -> int:
        return epoch * self.steps_per_epoch + step_in_epoch


def check_distributed_type(accelerator: Any) -> None:
    """One process, data parallel (DDP) or FSDP2: the strategies this trainer is built and
    tested for. DeepSpeed ZeRO is refused: its engine owns the optimizer step, checkpoints and
    gathering, which this loop does itself, and it could not be verified here."""
    from accelerate.utils import DistributedType

    supported = {DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.FSDP}
    if accelerator.distributed_type not in supported:
        raise InputError(
            f"training under {accelerator.distributed_type.value} is not supported; use one device, data parallel "
            "(recipes/accelerate/ddp.yaml, or torchrun) or FSDP2 (recipes/accelerate/fsdp.yaml, or distributed.strategy: fsdp)",
            field="distributed_type",
        )


def wants_sharding(config: TrainConfig, accelerator: Any) -> bool:
    """FSDP when the recipe asks for it or the run was launched with accelerate's FSDP config,
    and there are several processes to shard over (one process holds the whole model anyway)."""
    from accelerate.utils import DistributedType

    asked = config.distributed.strategy == "fsdp" or accelerator.distributed_type == DistributedType.FSDP
    if asked and accelerator.num_processes == 1:
        print("FSDP asked for, but this run has one process: the model is not sharded (launch with torchrun or accelerate launch)")
    return asked and accelerator.num_processes > 1


def _device_description(device: Any, processes: int) -> str:
    import torch

    where = f"{processes} processes on {device.type}" if processes > 1 else device.type
    return f"{where}, {torch.get_num_threads()} threads" if device.type == "cpu" else where


def forced_resume_note(changes: list[str]) -> str | None:
    """For the model card: the recipe changes a run was resumed under with --force (its Training
    lines describe only the recipe the run finished with)."""
    if not changes:
        return None
    return (
        "Resumed with --force under a changed recipe (or data); the lines above describe the recipe the run finished with. "
        "Changes: " + " | ".join(changes) + "."
    )


def adopt_later_best(state: TrainState, best: dict[str, Any]) -> None:
    """The best weights a run kept after its last checkpoint (a better dev score, then a stop)
    stay in ``best/`` when it resumes, and are the model unless the resumed run scores higher;
    ``state``, from the checkpoint, takes their step and score. Otherwise a resumed run that did
    not score as high again (another recipe under --force, a GPU's nondeterminism) shipped them
    under the checkpoint's best step and score: its card and result named weights it did not hold."""
    step, score = best.get("step"), best.get("score")
    if isinstance(step, bool) or not isinstance(step, int) or isinstance(score, bool) or not isinstance(score, (int, float)):
        return
    if step > state.global_step and (state.best_score is None or score > state.best_score):
        state.best_step, state.best_score = step, float(score)


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def check_trainer_arguments(config: Any, progress: Any, force: Any, stop_after_steps: Any) -> None:
    """Refuse, by argument, what a Trainer cannot run: a dict (a recipe read by hand) got as far as
    ``'dict' object has no attribute 'output_dir'``; ``force="no"`` was truthy, and resumed a run
    over a changed recipe; a step count of 0 or less stopped no run (steps count from 1)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (TrainConfig.from_yaml(path) reads a recipe), not {type(config).__name__}")
    for name, value in (("progress", progress), ("force", force)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")
    steps = stop_after_steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InputError(f"stop_after_steps must be a whole number of at least 1 or None, got {steps!r}", field="stop_after_steps")


class Trainer:
    """Runs one :class:`TrainConfig`; see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        progress: bool = True,
        stop_after_steps: int | None = None,
        force: bool = False,
        dev_scoring: DevScoring | None = None,
    ) -> None:
        check_trainer_arguments(config, progress, force, stop_after_steps)
        self.config = config
        # Injected because scoring needs inference and evaluation, which training may not import;
        # the CLI and the experiment runner pass evaluation.dev_scoring.predictor_dev_scoring.
        self.dev_scoring = dev_scoring
        # Resume even when the config differs from the one the run was started with.
        self.force = force
        self.paths = RunPaths(Path(config.output_dir))
        self.progress = progress
        # For tests of resuming: end the process's work after this many global steps, as a kill would.
        self.stop_after_steps = stop_after_steps
        self.precision: str | None = None  # resolved when the run starts
        self._memory_logged = False
        self.device_description: str | None = None
        self._forced_changes: list[str] = []  # what a --force resume changed, for the run's record

    # -- setup ------------------------------------------------------------------------------------
    def _accelerator(self) -> Any:
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        from instructerc.modeling.precision import mixed_precision

        cuda = torch.cuda.is_available()
        wanted = mixed_precision(self.config.backbone.dtype, "cuda" if cuda else "cpu")
        state = AcceleratorState._shared_state
        if state and state.get("_mixed_precision", wanted) != wanted:
            # accelerate keeps one precision per process; a process that trains several runs
            # (an experiment grid with a precision axis) starts each from its own. The
            # distributed state (PartialState) is kept.
            AcceleratorState._reset_state()
        return Accelerator(cpu=not cuda, mixed_precision=wanted)

    def _data(self) -> tuple[list[Dialogue], list[Dialogue]]:
        """The training dialogues (the fraction to train on) and the dev ones; refuses data a run
        could not learn from or select on, before the model loads."""
        data = self.config.data
        if data.path is None:
            # The data source's own error named its field 'path', which no recipe has.
            raise InputError(
                f"no data path for '{data.dataset}': set data.path in the recipe, or pass --data (the folder holding "
                "meld/, emorynlp/, cosmic/, a dataset folder, or a JSONL folder)",
                field="data.path",
            )
        source = data.source()
        require_split_folder(source)
        with warnings_held():  # a partial train split's warning is not printed above a broken dev split's error
            return self._train_and_dev(source)

    def _train_and_dev(self, source: DataSource) -> tuple[list[Dialogue], list[Dialogue]]:
        data = self.config.data
        everything = load_dialogues(source, "train")
        if not everything:
            raise InputError("no training dialogues", field="data")
        check_dataset_fractions(data.dataset_fractions, everything, split_file(source, "train"))
        train = stratified_fraction(everything, data.fraction_of, self.config.seed)
        require_labels(train, "the training data has no labelled utterances (no 'emotion'): nothing to learn", split_file(source, "train"))
        dev = load_dialogues(source, "dev")
        if not dev:
            raise InputError("no dev dialogues to select a checkpoint on", field="data")
        require_labels(dev, "the dev data has no labelled utterances (no 'emotion') to select a checkpoint on", split_file(source, "dev"))
        # Only labelled dialogues count in a dev score: max_dev_dialogues drawn among all could
        # keep none of them (refused as dev data without labels), or fewer than it allows.
        dev = [d for d in dev if any(u.emotion is not None for u in d.utterances)]
        if data.max_dev_dialogues is not None:
            dev = per_dataset_subset(dev, data.max_dev_dialogues, self.config.seed)
        return train, dev

    def _stage_examples(
        self, stage_index: int, train: list[Dialogue], setup: PromptSetup, demonstrations: dict, tokenizer: SegmentTokenizer
    ) -> list[EncodedExample]:
        stage = self.config.stages[stage_index]
        builder = setup.builder(demonstrations)
        examples = []
        for task_name, share in stage.tasks.items():
            task = Task(task_name)
            built = list(builder.examples(task, train, training=True))
            examples += seeded_subset(built, share, stable_seed(self.config.seed, stage_index, task_name))
        # Keep each dialogue's examples together and in utterance order, so they pack as one tree.
        position = {(d.dataset, d.id): i for i, d in enumerate(train)}
        examples.sort(key=lambda e: (position[(e.dataset, e.dialogue_id)], e.index, e.task.value))
        try:
            return setup.encode(examples, tokenizer)
        except PromptTooLong as error:
            # The budget's error knows the dialogue but not where it was read from, nor that the
            # recipe's max_length is the setting to change.
            raise error.as_setting_error(split_file(self.config.data.source(), "train")) from None

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainResult:
        with contextlib.ExitStack() as held:  # the run directory's lock, held to the end of the run
            session = self._start(resume, held)
            for stage_index in range(session.state.stage, len(self.config.stages)):
                if not self._run_stage(session, stage_index):
                    session.accelerator.wait_for_everyone()
                    return self._result(session, {})
            if session.state.best_step is None:
                self._evaluate(session)
            return self._result(session, self._finish(session))

    def _result(self, session: _Session, dev_metrics: dict[str, Any]) -> TrainResult:
        state = session.state
        return TrainResult(
            self.paths.model, state.best_score, state.best_step, state.global_step, dev_metrics, session.accelerator.is_main_process
        )

    def _start(self, resume: bool, held: contextlib.ExitStack) -> _Session:
        """Everything the stages share: the accelerator, data, prompts, model, and a resumed state;
        the run directory's lock goes into ``held``."""
        from instructerc.modeling.backbone import check_model_folder, load_tokenizer, resolve_model
        from instructerc.modeling.finetune import check_top_layers
        from instructerc.modeling.model_dir import check_adapter_backbone

        if self.dev_scoring is None:
            raise ValueError(
                "Trainer.run needs dev_scoring (instructerc.evaluation.dev_scoring.predictor_dev_scoring): checkpoints are selected on dev"
            )
        check_model_folder(self.config.backbone.model)
        if self.config.finetune.init_adapter is not None:
            check_adapter_backbone(self.config.finetune.init_adapter, self.config.backbone.model)
        accelerator = self._accelerator()
        check_distributed_type(accelerator)
        set_seed(self.config.seed)
        checkpoint = self._checkpoint_to_resume(accelerator, resume, held)
        saved = None if checkpoint is None else read_checkpoint_state(checkpoint)
        if checkpoint is not None and saved is not None:
            self._check_stage_exists(checkpoint, saved)

        train, dev = self._data()
        data = {"train": data_summary(train), "dev": data_summary(dev)}
        if saved is not None:
            self._check_same_data(saved, data, accelerator)
        unselected = datasets_without_dev(train, dev)
        if unselected and accelerator.is_main_process:
            print(
                f"note: dev has no labelled utterance of {', '.join(unselected)}: checkpoints are selected without them",
                file=sys.stderr,
            )
        config = self.config
        label_set = label_set_of(config.data.source())
        require_a_choice(label_set, split_file(config.data.source(), "train"))
        setup = PromptSetup(config.template, label_set, config.max_length, config.retrieval, config.speaker_variant, speaker_slots(train))
        check_stage_examples(config, train, setup.builder(), accelerator.num_processes, split_file(config.data.source(), "train"))
        model_path = resolve_model(config.backbone)
        check_top_layers(config.finetune.method, config.finetune.lora, model_path, config.backbone.trust_remote_code)
        hf_tokenizer = load_tokenizer(model_path, config.backbone.trust_remote_code)
        retriever, train_demos, dev_demos = self._demonstrations(setup, train, dev, accelerator)
        # A prompt that cannot fit max_length is said before the model loads (minutes for a large
        # one); a resumed run's prompts were checked when it started.
        first_examples = (
            None if checkpoint is not None else self._stage_examples(0, train, setup, train_demos, SegmentTokenizer(hf_tokenizer))
        )
        model, fsdp = self._model(model_path, accelerator, len(train), len(dev), checkpoint)

        state, optim_state = TrainState(), None
        if checkpoint is not None and saved is not None:
            state, optim_state = self._restore(checkpoint, saved, model, accelerator, sharded=fsdp is not None)
            self._record_forced_changes(state, accelerator)
        state.data = data  # what the checkpoints from here on were trained and selected on
        # Under FSDP each process scores its share of dev on the gathered weights, in one thread:
        # FSDP's bookkeeping is per module, not per thread.
        dev_set = DevSet(setup, hf_tokenizer, dev, dev_demos, accelerator, workers=1 if fsdp is not None else None)
        dev_scorer = self.dev_scoring(dev_set)
        return _Session(
            accelerator,
            model,
            setup,
            hf_tokenizer,
            train,
            train_demos,
            retriever,
            dev_scorer,
            state,
            optim_state,
            fsdp,
            checkpoint,
            first_examples,
        )

    def _checkpoint_to_resume(self, accelerator: Any, resume: bool, held: contextlib.ExitStack) -> Path | None:
        """The latest checkpoint when resuming; refuses to start over a run that has checkpoints,
        or in a folder another run is training in (the main process locks it, into ``held``)."""
        check_run_directory(self.paths)
        if accelerator.is_main_process:
            held.enter_context(run_lock(self.paths.root))
        checkpoints = self.paths.checkpoints
        if not resume:
            # Only a complete checkpoint counts: one cut short while saving (a full disk) left
            # just its staging folder, and nothing to continue from.
            if checkpoints.is_dir() and latest_checkpoint(checkpoints) is not None:
                raise InputError(
                    "this run directory already has checkpoints: pass --resume to continue it, or choose another output_dir",
                    path=self.paths.root,
                )
            if (self.paths.model / MANIFEST).is_file():
                # Training again would replace a finished model (hours of work) without a word.
                raise InputError(
                    "this run directory already holds a trained model (model/): choose another output_dir, or remove it first",
                    path=self.paths.root,
                )
            return None
        checkpoint = latest_checkpoint(checkpoints)
        if checkpoint is None and (self.paths.model / MANIFEST).is_file():
            raise InputError(
                "this run has finished (model/ is written) and kept no checkpoint to continue from: "
                "choose another output_dir to train again",
                path=self.paths.root,
            )
        if checkpoint is None:
            if accelerator.is_main_process:
                print(f"no checkpoint under {checkpoints}; starting from scratch")
            return None
        changed = check_resumable(self.paths.config, self.config.to_dict(), self.force, defaults=TrainConfig().to_dict())
        if not changed and (self.paths.model / MANIFEST).is_file():
            # Resuming would only retrain the steps after the last checkpoint into the same model.
            raise InputError(
                "this run has finished (model/ is written): nothing to resume. To train it further, change the recipe "
                "(more epochs, a new learning rate) and pass --resume --force",
                path=self.paths.root,
            )
        if changed and accelerator.is_main_process:
            print(f"resuming under a changed config (--force): {'; '.join(changed)}")
        self._forced_changes = changed
        return checkpoint

    def _check_stage_exists(self, checkpoint: Path, saved: TrainState) -> None:
        """Refuses, before the data and model load, a checkpoint taken in a stage the recipe does
        not have (a stage removed under --force): ``saved.stage`` stages were done, so it is in
        stage ``saved.stage + 1``. Resumed, the run skipped every stage and finished, training nothing more."""
        stages = len(self.config.stages)
        if saved.stage >= stages:
            raise InputError(
                f"written after stage {saved.stage} of its run, but the recipe has {stages} stage(s), so the stage it was "
                f"taken in (stage {saved.stage + 1}) is not in the recipe: resume with the recipe the run was started with",
                path=checkpoint / "state.json",
                field="stage",
            )

    def _check_same_data(self, saved: TrainState, data: dict[str, str], accelerator: Any) -> None:
        """Refuses, unless ``--force``, to resume on training or dev data other than the one the
        checkpoint (its ``saved`` state) recorded; under ``--force`` the change is recorded with
        the recipe's (model card, log)."""
        changes = data_changes(saved.data, data)
        if not changes:
            return
        if not self.force:
            source = self.config.data.source()
            refuse_changed_data(changes, split_file(source, "train" if changes[0].startswith("train") else "dev"))
        if accelerator.is_main_process:
            print(f"resuming on changed data (--force): {'; '.join(changes)}")
        self._forced_changes = [*self._forced_changes, *changes]

    def _demonstrations(self, setup: PromptSetup, train: list[Dialogue], dev: list[Dialogue], accelerator: Any) -> tuple[Any, dict, dict]:
        """The retriever and each utterance's demonstration, for templates that show one."""
        if not setup.uses_demonstrations:
            return None, {}, {}
        from instructerc.retrieval.retriever import DemonstrationRetriever

        retriever = DemonstrationRetriever.build(train, self.config.retrieval, progress=self.progress and accelerator.is_main_process)
        return retriever, retriever.demonstrations(train, training=True), retriever.demonstrations(dev, training=False)

    def _model(
        self, model_path: str, accelerator: Any, train_dialogues: int, dev_dialogues: int, checkpoint: Path | None
    ) -> tuple[Any, Any]:
        """The backbone made trainable in the run's precision, prepared by accelerate or sharded
        (then also its FSDP settings; else None); logs the start: in a log of its own for a run
        that starts afresh, else saying the ``checkpoint`` it resumes from (the steps after it
        are logged again)."""
        from instructerc.modeling.backbone import check_positions, load_causal_lm
        from instructerc.modeling.finetune import count_parameters, make_trainable
        from instructerc.modeling.precision import resolve_dtype
        from instructerc.modeling.sparse_attention import use_block_sparse_attention, use_causal_sdpa_attention

        config = self.config
        precision = self.precision = resolve_dtype(config.backbone.dtype, accelerator.device)
        self.device_description = _device_description(accelerator.device, accelerator.num_processes)
        # Trainable weights and their optimizer state stay float32 (AdamW on bf16 weights loses
        # small updates): full fine-tuning loads float32 master weights, and peft keeps LoRA
        # adapters float32 over a frozen base stored in the compute type. Autocast runs the
        # matrix products in that type either way.
        sharded = wants_sharding(config, accelerator)
        if sharded and precision == "float16":
            raise InputError(
                "FSDP runs train in bfloat16 or float32; float16 needs a gradient scaler this loop does not run", field="backbone.dtype"
            )
        # Sharded runs keep float32 master weights throughout, frozen ones included: an FSDP
        # unit gathers its weights in one type, and the mixed-precision policy casts them.
        weights = "float32" if config.finetune.method == "full" or sharded else precision
        model = load_causal_lm(model_path, config.backbone, accelerator.device, weights)
        # A prompt past a learned position table failed in the first forward pass (IndexError).
        check_positions(model, config.max_length)
        model = make_trainable(model, config.finetune.method, config.finetune.lora, config.finetune.init_adapter)
        if config.packing.block_sparse_attention and str(accelerator.device).startswith("cpu"):
            use_block_sparse_attention(model)
        else:
            use_causal_sdpa_attention(model)
        trainable, total = count_parameters(model)
        fsdp = None
        if sharded:
            from instructerc.training.fsdp import settings_for, shard_model

            fsdp = settings_for(accelerator, precision, config.distributed.reshard_after_forward)
            model = shard_model(model, fsdp, accelerator.device, accelerator.num_processes)
        else:
            model = accelerator.prepare(model)
        if accelerator.is_main_process:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            if checkpoint is None:
                set_aside_earlier_log(self.paths)
            self._write_yaml(self.paths.config, config.to_dict())
            self._log(
                {
                    "event": "start",
                    "trainable_parameters": trainable,
                    "parameters": total,
                    "train_dialogues": train_dialogues,
                    "dev_dialogues": dev_dialogues,
                    "processes": accelerator.num_processes,
                    "strategy": "fsdp" if sharded else "ddp",
                    "device": str(accelerator.device),
                    "precision": precision,
                    "trainable_precision": "float32",
                    "resumed_from": None if checkpoint is None else checkpoint.name,
                }
            )
        return model, fsdp

    def _restore(
        self, checkpoint: Path, saved: TrainState, model: Any, accelerator: Any, sharded: bool
    ) -> tuple[TrainState, dict[str, Any]]:
        """The state (``saved``, as read from ``checkpoint``) and optimizer state of ``checkpoint``,
        its weights loaded into ``model``."""
        from instructerc.modeling.finetune import load_trainable_state
        from instructerc.training.sharded_reading import INDEX_FILE

        state, weights, optim_state = load_checkpoint(checkpoint, saved)
        recover_best(self.paths.best)
        if state.best_step is not None:
            # Missing or damaged, they would fail only as the model is written, after the rest of the run.
            adopt_later_best(state, read_best_dev_metrics(self.paths.best_dev_metrics))
            best = self.paths.best_shards / INDEX_FILE if sharded else self.paths.best_weights
            if not best.is_file():
                raise InputError("missing: the run's best weights; train again in a new output_dir", path=best)
        if sharded != (weights is None):
            written, now = ("a sharded (FSDP)", "data-parallel") if weights is None else ("a data-parallel", "sharded (FSDP)")
            # One process runs data-parallel whatever the recipe says: FSDP needs two or more.
            how = " (FSDP runs with two or more processes)" if weights is None and accelerator.num_processes == 1 else ""
            raise InputError(
                f"this checkpoint was written by {written} run; resume it the same way{how}, not as a {now} run", path=checkpoint
            )
        if sharded:
            from instructerc.training.fsdp import load_sharded

            load_sharded(checkpoint / SHARDED_DIR, model)
        else:
            check_weights_fit(weights, accelerator.unwrap_model(model), checkpoint / "trainable.pt")
            load_trainable_state(accelerator.unwrap_model(model), weights)
        if accelerator.is_main_process:
            print(f"resuming from {checkpoint.name}: stage {state.stage}, epoch {state.epoch}, step {state.step_in_epoch}")
        return state, optim_state

    def _record_forced_changes(self, state: TrainState, accelerator: Any) -> None:
        """A --force resume ran part of the run under another recipe: the state keeps what changed
        and where (through later resumes too), for the model card and the metrics log."""
        if not self._forced_changes:
            return
        state.forced_changes.append(f"at step {state.global_step}: {'; '.join(self._forced_changes)}")
        if accelerator.is_main_process:
            self._log({"event": "resume", "step": state.global_step, "forced_changes": self._forced_changes})

    # -- one stage --------------------------------------------------------------------------------
    def _run_stage(self, session: _Session, stage_index: int) -> bool:
        """Trains one stage to its end; False when the run stops early (``stop_after_steps``)."""
        from tqdm.auto import tqdm

        stage, state = self.config.stages[stage_index], session.state
        if stage_index == 0 and session.first_stage_examples is not None:
            examples, session.first_stage_examples = session.first_stage_examples, None
        else:
            examples = self._stage_examples(
                stage_index, session.train, session.setup, session.train_demos, SegmentTokenizer(session.hf_tokenizer)
            )
        steps_per_epoch = len(steps(list(range(len(examples))), self.config.optim.batch_size, session.world))
        plan = _StagePlan(
            stage_index,
            examples,
            steps_per_epoch,
            max(1, math.ceil(stage.epochs * steps_per_epoch)),
            class_weights(examples, self.config.optim.class_balance),
        )
        optimizer, scheduler = self._stage_optimizer(session, plan)
        bar = tqdm(
            total=plan.total_steps,
            initial=plan.done(state.epoch, state.step_in_epoch),
            desc=f"stage {stage_index + 1}/{len(self.config.stages)} ({'+'.join(stage.tasks)})",
            disable=not (self.progress and session.accelerator.is_main_process),
            dynamic_ncols=True,
        )
        try:
            for epoch in range(state.epoch, plan.epochs):
                state.epoch = epoch
                order = epoch_order(
                    examples,
                    stable_seed(self.config.seed, stage_index, epoch),
                    self.config.packing.shared_prefix,
                    self.config.packing.dialogue_chunk,
                )
                batches = steps(order, self.config.optim.batch_size, session.world)
                for step_index in range(state.step_in_epoch, len(batches)):
                    if plan.done(epoch, step_index) >= plan.total_steps:
                        break
                    self._train_step(session, plan, optimizer, scheduler, batches[step_index], bar)
                    if self.stop_after_steps is not None and state.global_step >= self.stop_after_steps:
                        return False
                state.step_in_epoch = 0
        finally:
            bar.close()
        state.epoch, state.step_in_epoch = 0, 0
        session.optim_state = None
        if stage_index + 1 < len(self.config.stages):
            state.stage = stage_index + 1
        return True

    def _stage_optimizer(self, session: _Session, plan: _StagePlan) -> tuple[Any, Any]:
        """AdamW with linear warmup and decay over the stage; restored when resuming inside it."""
        import torch
        from transformers import get_linear_schedule_with_warmup

        optim, state = self.config.optim, session.state
        params = [p for p in session.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
        if session.fsdp is None:
            # accelerate's wrapper adds the fp16 gradient scaler; FSDP runs (bf16 or fp32) need
            # none, and accelerate refuses an optimizer prepared apart from its model under FSDP.
            optimizer = session.accelerator.prepare(optimizer)
        # The scheduler is not prepared: accelerate's steps it once per process per step, for
        # loaders whose batch grows with the processes; this loop's batch is global.
        # Warmup starts at a learning rate of 0, so it stops a step short of the stage's end: a
        # stage of one step under warmup_ratio 0.6 took that step at 0 and trained nothing.
        warmup = max(0, min(round(optim.warmup_ratio * plan.total_steps), plan.total_steps - 1))
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, plan.total_steps)
        if session.optim_state is not None and plan.index == state.stage:
            if session.fsdp is None:
                optimizer.load_state_dict(session.optim_state["optimizer"])
            else:
                from instructerc.training.fsdp import load_sharded

                assert session.resumed_from is not None
                load_sharded(session.resumed_from / SHARDED_DIR, session.model, optimizer)
            scheduler.load_state_dict(session.optim_state["scheduler"])
            accelerator = session.accelerator
            set_rng_state(process_rng_state(session.optim_state, accelerator.process_index, accelerator.num_processes))
        else:
            state.epoch, state.step_in_epoch = 0, 0
        state.stage = plan.index
        return optimizer, scheduler

    def _train_step(self, session: _Session, plan: _StagePlan, optimizer: Any, scheduler: Any, batch: list[int], bar: Any) -> None:
        """One optimizer step, then its log line, and the dev evaluation and checkpoint when due."""
        state, accelerator = session.state, session.accelerator
        done = plan.done(state.epoch, state.step_in_epoch) + 1
        lr = scheduler.get_last_lr()[0]  # the step's own: after it, the scheduler holds the next step's
        started = time.perf_counter()
        loss_value, tokens = self._step(
            session.model,
            optimizer,
            scheduler,
            accelerator,
            plan.examples,
            batch,
            session.rank,
            session.world,
            session.hf_tokenizer.pad_token_id,
            plan.weights,
        )
        elapsed = time.perf_counter() - started
        if not self._memory_logged:
            self._log_memory(session, optimizer)
        state.step_in_epoch += 1
        state.global_step += 1
        state.train_seconds += elapsed
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens / elapsed:.0f}")
        if accelerator.is_main_process:
            self._log(
                {
                    "event": "step",
                    "step": state.global_step,
                    "stage": plan.index,
                    "epoch": state.epoch,
                    "loss": loss_value,
                    "lr": lr,
                    "tokens": tokens,
                    "tokens_per_s": tokens / elapsed,
                    "examples": len(batch),
                }
            )
        if self.config.stages[plan.index].evaluates_erc and self._evaluation_due(state, done, plan.steps_per_epoch, plan.total_steps):
            self._evaluate(session)
        if state.global_step % self.config.checkpoint_every_steps == 0:
            self._checkpoint(session, optimizer, scheduler)

    def _evaluation_due(self, state: TrainState, done: int, steps_per_epoch: int, total_steps: int) -> bool:
        """Whether to score dev after ``done`` steps of the current stage."""
        if done == total_steps:
            return True
        if self.config.eval_every_steps:
            return state.global_step % self.config.eval_every_steps == 0
        # More evaluations than steps is one after every step, and the search below is linear in
        # them: evals_per_epoch: 1e12 hung the run before its first step.
        per_epoch = min(self.config.evals_per_epoch, steps_per_epoch)
        position = (done - 1) % steps_per_epoch + 1
        return any(position == round(k * steps_per_epoch / per_epoch) for k in range(1, per_epoch + 1))

    def _step(self, model, optimizer, scheduler, accelerator, examples, batch, rank, world, pad_id, weights=None) -> tuple[float, int]:
        import torch

        from instructerc.modeling.forward import example_losses
        from instructerc.training.fsdp import accumulating, is_sharded

        local = shard(batch, rank, world)
        chunks: list[Any] = micro_batches(local, examples, self.config.optim.micro_batch_size)
        size = self.config.optim.micro_batch_size
        chunk_weights = None if weights is None else [[weights[i] for i in local[j : j + size]] for j in range(0, len(local), size)]
        sharded = is_sharded(model)
        filler = None
        if sharded:
            # Every forward and backward of an FSDP model is a collective, so every process runs
            # as many micro-batches as the one with the largest share (process 0); the others
            # pad with a micro-batch whose loss counts zero.
            needed = len(micro_batches(shard(batch, 0, world), examples, self.config.optim.micro_batch_size))
            filler = (chunks or micro_batches(batch[:1], examples, 1))[0]
            chunks += [None] * (needed - len(chunks))
        total_loss, tokens = 0.0, 0
        model.train()
        for position, chunk in enumerate(chunks):
            counted = chunk is not None
            micro = collate(chunk if counted else filler, pad_id, self.config.packing.max_tokens, self.config.packing.shared_prefix)
            micro = micro.to(accelerator.device)
            last = position == len(chunks) - 1
            sync = accumulating(model, last) if sharded else nullcontext() if last else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                losses = example_losses(model, micro)
                if chunk_weights is not None and counted:
                    losses = losses * torch.tensor(chunk_weights[position], dtype=losses.dtype, device=losses.device)
                # Mean over the global batch: DDP and FSDP average over processes, hence * world.
                loss = losses.sum() * (world / len(batch) if counted else 0.0)
                accelerator.backward(loss)
            if counted:
                total_loss += float(losses.detach().sum())
                tokens += micro.tokens
        if self.config.optim.max_grad_norm > 0:
            accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.config.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        summed = accelerator.reduce(torch.tensor([total_loss, float(tokens)], device=accelerator.device), reduction="sum")
        return float(summed[0]) / len(batch), int(summed[1])

    # -- evaluation, checkpoints, output -----------------------------------------------------------
    def _evaluate(self, session: _Session) -> None:
        """Scores dev, logs it, and keeps the weights when they are the best so far."""
        model, accelerator, state = session.model, session.accelerator, session.state
        started = time.perf_counter()
        if session.fsdp is None:
            scores = session.dev_scorer(model)
        else:
            from instructerc.training.fsdp import gathered

            with gathered(model, session.fsdp):
                scores = session.dev_scorer(model)
        state.train_seconds += time.perf_counter() - started
        score, results = scores.score, scores.by_dataset
        record = {
            "event": "eval",
            "step": state.global_step,
            "stage": state.stage,
            "epoch": state.epoch,
            "dev_score": score,
            **{f"dev_{d}_weighted_f1": m.weighted_f1 for d, m in results.items()},
        }
        state.evaluations.append(record)
        improved = state.best_score is None or score > state.best_score
        if improved:
            state.best_score, state.best_step = score, state.global_step
        if accelerator.is_main_process:
            self._log(record)
            print(
                f"step {state.global_step}: dev weighted F1 {score:.2f}"
                + (" (best)" if improved else f" (best {state.best_score:.2f} at step {state.best_step})")
            )
        if improved:
            self._save_best(session, record_metrics(state.global_step, score, self.precision, results))
        accelerator.wait_for_everyone()

    def _save_best(self, session: _Session, dev_metrics: dict[str, Any]) -> None:
        """The dev-best weights beside their metrics, as one folder swapped in whole: written file
        by file, a stop between the weights and the metrics left one step's weights under another
        step's metrics, and a resume that did not score as high again shipped them so. Whole by
        the main process, or sharded by all (swapped in once every process has written its part)."""
        from instructerc.files import followed_link
        from instructerc.modeling.finetune import trainable_state

        accelerator = session.accelerator
        best = followed_link(self.paths.best)  # staged beside the folder it replaces: a rename stays on one file system
        if session.fsdp is not None:
            staging = self._write_shards(accelerator, best, session.model, inside=SHARDED_DIR)
            if accelerator.is_main_process:
                commit_best(staging, best, dev_metrics)
        elif accelerator.is_main_process:
            staging = begin_checkpoint(best)
            commit_best(staging, best, dev_metrics, trainable_state(accelerator.unwrap_model(session.model)))

    def _checkpoint(self, session: _Session, optimizer: Any, scheduler: Any) -> None:
        from instructerc.modeling.finetune import trainable_state

        model, accelerator, state = session.model, session.accelerator, session.state
        target = self.paths.checkpoints / f"step-{state.global_step:07d}"
        rngs = _rng_by_process(accelerator)
        if session.fsdp is not None:
            staging = self._write_shards(accelerator, target, model, optimizer, inside=SHARDED_DIR)
            if accelerator.is_main_process:
                commit_checkpoint(staging, target, state, scheduler, rng_by_process=rngs)
                prune_checkpoints(self.paths.checkpoints, keep=1)
        elif accelerator.is_main_process:
            save_checkpoint(target, state, trainable_state(accelerator.unwrap_model(model)), optimizer, scheduler, rngs)
            prune_checkpoints(self.paths.checkpoints, keep=1)
        accelerator.wait_for_everyone()

    @staticmethod
    def _write_shards(accelerator: Any, target: Path, model: Any, optimizer: Any = None, inside: str = "") -> Path:
        """Every process writes its shards of ``model`` (and ``optimizer``) into a fresh staging
        folder for ``target`` (under ``inside``); returns the folder, for the main process to
        complete and rename into place."""
        from instructerc.training.fsdp import save_sharded

        staging = begin_checkpoint(target) if accelerator.is_main_process else staging_path(target)
        accelerator.wait_for_everyone()
        save_sharded(staging / inside if inside else staging, model, optimizer)
        accelerator.wait_for_everyone()
        return staging

    def _finish(self, session: _Session) -> dict[str, Any]:
        """Writes the model directory from the dev-selected weights; returns their dev metrics."""
        from instructerc.modeling.finetune import load_trainable_state
        from instructerc.modeling.model_dir import Manifest, write_model_dir
        from instructerc.retrieval.index import save_pool
        from instructerc.training.model_card import write_model_card

        accelerator, setup, retriever, state = session.accelerator, session.setup, session.retriever, session.state
        accelerator.wait_for_everyone()
        dev_metrics = read_best_dev_metrics(self.paths.best_dev_metrics)
        weights: dict[str, Any] | None = None  # whole weights for a sharded model (main process)
        if session.fsdp is not None:
            from instructerc.training.fsdp import full_state, load_sharded

            load_sharded(self.paths.best_shards, session.model)
            weights = full_state(session.model)
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(session.model)
            if weights is None:
                load_trainable_state(unwrapped, read_best_weights(self.paths.best_weights))

            def fill(directory: Path) -> None:
                unwrapped.save_pretrained(directory, safe_serialization=True, **({} if weights is None else {"state_dict": weights}))
                session.hf_tokenizer.save_pretrained(directory)
                Manifest(backbone=self.config.backbone, method=self.config.finetune.method).save(directory)
                setup.save(directory)
                if retriever is not None:
                    save_pool(retriever.index, directory)
                self._write_yaml(directory / TRAINING_CONFIG, self.config.to_dict())
                with open(directory / DEV_METRICS, "w", encoding="utf-8") as handle:
                    json.dump(dev_metrics, handle, indent=2)
                write_model_card(
                    directory,
                    self.config,
                    setup,
                    dev_metrics,
                    state,
                    location=str(self.paths.model),
                    precision=self.precision,
                    device=self.device_description,
                    training_note=forced_resume_note(state.forced_changes),
                    train_dialogues=len(session.train),
                )

            kept = write_model_dir(self.paths.model, fill, keep_earlier=True)
            if kept is not None:
                print(
                    f"note: {self.paths.model} held more than a model (e.g. evaluations of it): the earlier model and all it held "
                    f"are kept as {kept}",
                    file=sys.stderr,
                )
            self._log({"event": "done", "best_step": state.best_step, "best_dev_score": state.best_score, "model": str(self.paths.model)})
        accelerator.wait_for_everyone()
        return dev_metrics

    def _log_memory(self, session: _Session, optimizer: Any) -> None:
        """After the first step: the bytes of parameters and optimizer state each process holds."""
        from accelerate.utils import gather_object

        from instructerc.training.fsdp import local_bytes

        self._memory_logged = True
        everyone = gather_object([local_bytes(session.model, optimizer)])
        if session.accelerator.is_main_process:
            self._log({"event": "memory", "per_process": everyone})

    def _log(self, record: dict[str, Any]) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        append_line(self.paths.metrics, json.dumps({"time": time.time(), **record}))

    @staticmethod
    def _write_yaml(path: Path, data: dict[str, Any]) -> None:
        import yaml

        from instructerc.files import atomic_write

        with atomic_write(path) as handle:
            yaml.safe_dump(to_mapping(data), handle, sort_keys=False)
