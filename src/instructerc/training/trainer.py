"""The training loop: multi-stage, multi-task, dev-selected, resumable, distributed through accelerate.

One command runs on one CPU, one GPU, or many under ``accelerate launch`` / ``torchrun`` (DDP;
FSDP and DeepSpeed through accelerate's config files). Per step it computes only what teaches:
prompts of a dialogue are packed as a prefix tree (a shared prefix is computed once) and the
vocabulary projection runs only at target positions. The test split is never read.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructerc.config import to_mapping
from instructerc.data.dialogue import Dialogue
from instructerc.data.registry import label_set_of, load_dialogues
from instructerc.data.sampling import per_dataset_subset, seeded_subset, stable_seed, stratified_fraction
from instructerc.errors import InputError
from instructerc.prompts.encoding import EncodedExample, SegmentTokenizer
from instructerc.prompts.example import Task
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.tasks import speaker_slots
from instructerc.training.batches import collate, epoch_order, micro_batches, shard, steps
from instructerc.training.checkpoint import (
    TrainState,
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from instructerc.training.config import TrainConfig
from instructerc.training.dev import DevScorer, DevScoring, DevSet


@dataclass(frozen=True)
class RunPaths:
    """A run directory: ``model/`` is the deliverable; the rest is the run's working state."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    best_dev_score: float | None
    best_step: int | None
    global_step: int
    dev_metrics: dict[str, Any]
    main_process: bool = True


def check_distributed_type(accelerator: Any) -> None:
    """One process, or data parallel (DDP): the strategies this trainer is built and tested for.

    Sharded strategies (FSDP, DeepSpeed ZeRO) shard parameters and optimizer state; dev scoring,
    checkpoints and the final export here read whole parameters on each process, so they are
    refused rather than run wrong.
    """
    from accelerate.utils import DistributedType

    supported = {DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU}
    if accelerator.distributed_type not in supported:
        raise InputError(
            f"training under {accelerator.distributed_type.value} is not supported; use one device or data parallel "
            "(accelerate launch --config_file recipes/accelerate/ddp.yaml, or torchrun)",
            field="distributed_type",
        )


def _device_description(device: Any, processes: int) -> str:
    import torch

    where = f"{processes} processes on {device.type}" if processes > 1 else device.type
    return f"{where}, {torch.get_num_threads()} threads" if device.type == "cpu" else where


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


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
        self.device_description: str | None = None

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
        source = self.config.data.source()
        train = stratified_fraction(load_dialogues(source, "train"), self.config.data.fraction_of, self.config.seed)
        dev = load_dialogues(source, "dev")
        if self.config.data.max_dev_dialogues is not None:
            dev = per_dataset_subset(dev, self.config.data.max_dev_dialogues, self.config.seed)
        if not train:
            raise InputError("no training dialogues", field="data")
        if not dev:
            raise InputError("no dev dialogues to select a checkpoint on", field="data")
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
        return setup.encode(examples, tokenizer)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainResult:
        import torch
        from tqdm.auto import tqdm
        from transformers import get_linear_schedule_with_warmup

        from instructerc.modeling.backbone import load_causal_lm, load_tokenizer, resolve_model
        from instructerc.modeling.finetune import count_parameters, load_trainable_state, make_trainable
        from instructerc.modeling.precision import resolve_dtype
        from instructerc.modeling.sparse_attention import use_block_sparse_attention, use_causal_sdpa_attention

        config = self.config
        if self.dev_scoring is None:
            raise ValueError(
                "Trainer.run needs dev_scoring (instructerc.evaluation.dev_scoring.predictor_dev_scoring): checkpoints are selected on dev"
            )
        accelerator = self._accelerator()
        check_distributed_type(accelerator)
        rank, world = accelerator.process_index, accelerator.num_processes
        set_seed(config.seed)

        state = TrainState()
        checkpoint = latest_checkpoint(self.paths.checkpoints) if resume else None
        if resume and checkpoint is None and accelerator.is_main_process:
            print(f"no checkpoint under {self.paths.checkpoints}; starting from scratch")
        if not resume and self.paths.checkpoints.exists() and any(self.paths.checkpoints.iterdir()):
            raise InputError(
                "this run directory already has checkpoints: pass --resume to continue it, or choose another output_dir",
                path=self.paths.root,
            )
        if checkpoint is not None:
            changed = check_resumable(self.paths.root / "config.yaml", config.to_dict(), self.force)
            if changed and accelerator.is_main_process:
                print(f"resuming under a changed config (--force): {'; '.join(changed)}")

        train, dev = self._data()
        label_set = label_set_of(config.data.source())
        setup = PromptSetup(config.template, label_set, config.max_length, config.retrieval, config.speaker_variant, speaker_slots(train))
        model_path = resolve_model(config.backbone)
        hf_tokenizer = load_tokenizer(model_path, config.backbone.trust_remote_code)
        tokenizer = SegmentTokenizer(hf_tokenizer)

        retriever, train_demos, dev_demos = None, {}, {}
        if setup.uses_demonstrations:
            from instructerc.retrieval.retriever import DemonstrationRetriever

            retriever = DemonstrationRetriever.build(train, config.retrieval, progress=self.progress and accelerator.is_main_process)
            train_demos = retriever.demonstrations(train, training=True)
            dev_demos = retriever.demonstrations(dev, training=False)

        precision = self.precision = resolve_dtype(config.backbone.dtype, accelerator.device)
        self.device_description = _device_description(accelerator.device, world)
        # Trainable weights and their optimizer state stay float32 (AdamW on bf16 weights loses
        # small updates): full fine-tuning loads float32 master weights, and peft keeps LoRA
        # adapters float32 over a frozen base stored in the compute type. Autocast runs the
        # matrix products in that type either way.
        weights = "float32" if config.finetune.method == "full" else precision
        model = load_causal_lm(model_path, config.backbone, accelerator.device, weights)
        model = make_trainable(model, config.finetune.method, config.finetune.lora)
        if config.packing.block_sparse_attention and str(accelerator.device).startswith("cpu"):
            use_block_sparse_attention(model)
        else:
            use_causal_sdpa_attention(model)
        trainable, total = count_parameters(model)
        model = accelerator.prepare(model)
        if accelerator.is_main_process:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self._write_yaml(self.paths.root / "config.yaml", config.to_dict())
            self._log(
                {
                    "event": "start",
                    "trainable_parameters": trainable,
                    "parameters": total,
                    "train_dialogues": len(train),
                    "dev_dialogues": len(dev),
                    "processes": world,
                    "device": str(accelerator.device),
                    "precision": precision,
                    "trainable_precision": "float32",
                }
            )

        optim_state = None
        if checkpoint is not None:
            state, weights, optim_state = load_checkpoint(checkpoint)
            load_trainable_state(accelerator.unwrap_model(model), weights)
            if accelerator.is_main_process:
                print(f"resuming from {checkpoint.name}: stage {state.stage}, epoch {state.epoch}, step {state.step_in_epoch}")

        dev_evaluator = self.dev_scoring(DevSet(setup, hf_tokenizer, dev, dev_demos, accelerator))
        stopped = False
        for stage_index in range(state.stage, len(config.stages)):
            stage = config.stages[stage_index]
            examples = self._stage_examples(stage_index, train, setup, train_demos, tokenizer)
            by_dialogue = config.packing.shared_prefix
            steps_per_epoch = len(steps(list(range(len(examples))), config.optim.batch_size, world))
            total_steps = max(1, math.ceil(stage.epochs * steps_per_epoch))
            epochs = math.ceil(total_steps / max(1, steps_per_epoch))
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(
                params, lr=config.optim.lr, betas=tuple(config.optim.betas), weight_decay=config.optim.weight_decay
            )
            scheduler = get_linear_schedule_with_warmup(optimizer, round(config.optim.warmup_ratio * total_steps), total_steps)
            optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
            if optim_state is not None and stage_index == state.stage:
                optimizer.load_state_dict(optim_state["optimizer"])
                scheduler.load_state_dict(optim_state["scheduler"])
                set_rng_state(optim_state["rng"])
            else:
                state.epoch, state.step_in_epoch = 0, 0
            state.stage = stage_index
            done_in_stage = state.epoch * steps_per_epoch + state.step_in_epoch
            bar = tqdm(
                total=total_steps,
                initial=done_in_stage,
                desc=f"stage {stage_index + 1}/{len(config.stages)} ({'+'.join(stage.tasks)})",
                disable=not (self.progress and accelerator.is_main_process),
                dynamic_ncols=True,
            )
            for epoch in range(state.epoch, epochs):
                state.epoch = epoch
                order = epoch_order(examples, stable_seed(config.seed, stage_index, epoch), by_dialogue, config.packing.dialogue_chunk)
                batches = steps(order, config.optim.batch_size, world)
                for step_index in range(state.step_in_epoch, len(batches)):
                    if epoch * steps_per_epoch + step_index >= total_steps:
                        break
                    started = time.perf_counter()
                    batch = batches[step_index]
                    loss_value, tokens = self._step(
                        model, optimizer, scheduler, accelerator, examples, batch, rank, world, hf_tokenizer.pad_token_id
                    )
                    state.step_in_epoch = step_index + 1
                    state.global_step += 1
                    elapsed = time.perf_counter() - started
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens / elapsed:.0f}")
                    if accelerator.is_main_process:
                        self._log(
                            {
                                "event": "step",
                                "step": state.global_step,
                                "stage": stage_index,
                                "epoch": epoch,
                                "loss": loss_value,
                                "lr": scheduler.get_last_lr()[0],
                                "tokens": tokens,
                                "tokens_per_s": tokens / elapsed,
                                "examples": len(batch),
                            }
                        )
                    state.train_seconds += elapsed
                    if stage.evaluates_erc and self._evaluation_due(
                        state, epoch * steps_per_epoch + step_index + 1, steps_per_epoch, total_steps
                    ):
                        self._evaluate(model, accelerator, dev_evaluator, state)
                    if state.global_step % config.checkpoint_every_steps == 0:
                        self._checkpoint(model, optimizer, scheduler, accelerator, state)
                    if self.stop_after_steps is not None and state.global_step >= self.stop_after_steps:
                        stopped = True
                        break
                if stopped:
                    break
                state.step_in_epoch = 0
            bar.close()
            if stopped:
                break
            state.epoch, state.step_in_epoch = 0, 0
            optim_state = None
            if stage_index + 1 < len(config.stages):
                state.stage = stage_index + 1
        if stopped:
            accelerator.wait_for_everyone()
            return TrainResult(self.paths.model, state.best_score, state.best_step, state.global_step, {}, accelerator.is_main_process)
        if state.best_step is None:
            self._evaluate(model, accelerator, dev_evaluator, state)
        dev_metrics = self._finish(accelerator, model, setup, retriever, state, hf_tokenizer)
        return TrainResult(self.paths.model, state.best_score, state.best_step, state.global_step, dev_metrics, accelerator.is_main_process)

    def _evaluation_due(self, state: TrainState, done: int, steps_per_epoch: int, total_steps: int) -> bool:
        """Whether to score dev after ``done`` steps of the current stage."""
        if done == total_steps:
            return True
        if self.config.eval_every_steps:
            return state.global_step % self.config.eval_every_steps == 0
        per_epoch = self.config.evals_per_epoch
        position = (done - 1) % steps_per_epoch + 1
        return any(position == round(k * steps_per_epoch / per_epoch) for k in range(1, per_epoch + 1))

    def _step(self, model, optimizer, scheduler, accelerator, examples, batch, rank, world, pad_id) -> tuple[float, int]:
        import torch

        from instructerc.modeling.forward import example_losses

        local = shard(batch, rank, world)
        chunks = micro_batches(local, examples, self.config.optim.micro_batch_size)
        total_loss, tokens = 0.0, 0
        model.train()
        for position, chunk in enumerate(chunks):
            micro = collate(chunk, pad_id, self.config.packing.max_tokens, self.config.packing.shared_prefix).to(accelerator.device)
            last = position == len(chunks) - 1
            with nullcontext() if last else accelerator.no_sync(model), accelerator.autocast():
                losses = example_losses(model, micro)
                # Mean over the global batch: DDP averages over processes, hence * world.
                loss = losses.sum() * world / len(batch)
                accelerator.backward(loss)
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
    def _evaluate(self, model, accelerator, evaluator: DevScorer, state: TrainState) -> None:
        from instructerc.modeling.finetune import trainable_state

        started = time.perf_counter()
        scores = evaluator(model)
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
                import torch

                self.paths.best.mkdir(parents=True, exist_ok=True)
                torch.save(trainable_state(accelerator.unwrap_model(model)), self.paths.best / "trainable.pt.tmp")
                (self.paths.best / "trainable.pt.tmp").replace(self.paths.best / "trainable.pt")
                with open(self.paths.best / "dev_metrics.json.tmp", "w", encoding="utf-8") as handle:
                    json.dump(
                        {
                            "step": state.global_step,
                            "score": score,
                            "precision": self.precision,
                            "by_dataset": {d: m.to_dict() for d, m in results.items()},
                        },
                        handle,
                    )
                (self.paths.best / "dev_metrics.json.tmp").replace(self.paths.best / "dev_metrics.json")
        accelerator.wait_for_everyone()

    def _checkpoint(self, model, optimizer, scheduler, accelerator, state: TrainState) -> None:
        from instructerc.modeling.finetune import trainable_state

        if accelerator.is_main_process:
            target = self.paths.checkpoints / f"step-{state.global_step:07d}"
            save_checkpoint(target, state, trainable_state(accelerator.unwrap_model(model)), optimizer, scheduler)
            prune_checkpoints(self.paths.checkpoints, keep=1)
        accelerator.wait_for_everyone()

    def _finish(self, accelerator, model, setup, retriever, state: TrainState, hf_tokenizer) -> dict[str, Any]:
        import torch

        from instructerc.modeling.finetune import load_trainable_state
        from instructerc.modeling.model_dir import Manifest, write_model_dir
        from instructerc.retrieval.index import save_pool
        from instructerc.training.model_card import write_model_card

        accelerator.wait_for_everyone()
        dev_metrics = json.loads((self.paths.best / "dev_metrics.json").read_text(encoding="utf-8"))
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            load_trainable_state(unwrapped, torch.load(self.paths.best / "trainable.pt", weights_only=True))

            def fill(directory: Path) -> None:
                unwrapped.save_pretrained(directory, safe_serialization=True)
                hf_tokenizer.save_pretrained(directory)
                Manifest(backbone=self.config.backbone, method=self.config.finetune.method).save(directory)
                setup.save(directory)
                if retriever is not None:
                    save_pool(retriever.index, directory)
                self._write_yaml(directory / "training_config.yaml", self.config.to_dict())
                with open(directory / "dev_metrics.json", "w", encoding="utf-8") as handle:
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
                )

            write_model_dir(self.paths.model, fill)
            self._log({"event": "done", "best_step": state.best_step, "best_dev_score": state.best_score, "model": str(self.paths.model)})
        accelerator.wait_for_everyone()
        return dev_metrics

    def _log(self, record: dict[str, Any]) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with open(self.paths.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": time.time(), **record}) + "\n")

    @staticmethod
    def _write_yaml(path: Path, data: dict[str, Any]) -> None:
        import yaml

        from instructerc.files import atomic_write

        with atomic_write(path) as handle:
            yaml.safe_dump(to_mapping(data), handle, sort_keys=False)
