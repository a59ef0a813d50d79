"""Checks of a run's training and dev data, made before the model loads: each refuses data that
would train nothing, or select the checkpoint on something other than dev, without a word."""

from __future__ import annotations

from pathlib import Path

from instructerc.data.dialogue import Dialogue
from instructerc.data.registry import DataSource
from instructerc.data.sampling import subset_size
from instructerc.errors import InputError
from instructerc.labels.label_set import LabelSet
from instructerc.prompts.example import Task
from instructerc.prompts.tasks import ExampleBuilder
from instructerc.training.batches import check_batch_size
from instructerc.training.config import StageConfig, TrainConfig


def require_split_folder(source: DataSource) -> None:
    """A single JSONL file would be read as train, dev and test alike, so the checkpoint would be
    selected on the training data; training needs the splits apart."""
    if source.name == "jsonl" and source.root().is_file():
        raise InputError(
            "training needs a folder with train.jsonl and dev.jsonl (dev selects the checkpoint), not a single file",
            path=source.root(),
            field="data.path",
        )


def split_file(source: DataSource, split: str) -> Path:
    """Where a split was read from, for messages: its JSONL file, else the data path."""
    root = source.root()
    return root / f"{split}.jsonl" if source.name == "jsonl" and root.is_dir() else root


def require_labels(dialogues: list[Dialogue], message: str, where: Path) -> None:
    if not any(u.emotion is not None for d in dialogues for u in d.utterances):
        raise InputError(message, path=where)


def require_a_choice(label_set: LabelSet | None, where: Path) -> None:
    """Refuses a label set of one label (JSONL training data whose emotions, read as the label
    set, are all one): the model would have nothing to choose, always answer that label, and
    report a dev weighted F1 of 100 for it."""
    if label_set is not None and len(label_set.labels) < 2:
        raise InputError(
            f"the training data uses one emotion only ('{label_set.labels[0]}'), so the model would have no other label to choose: "
            "label other emotions too, or set data.label_set to the label set they belong to",
            path=where,
            field="data.label_set",
        )


def check_dataset_fractions(fractions: dict[str, float], train: list[Dialogue], where: Path) -> None:
    """A fraction for a dataset the data does not have would be ignored: a typo would train on everything."""
    known = sorted({d.dataset for d in train})
    unknown = sorted(set(fractions) - set(known))
    if unknown:
        raise InputError(
            f"unknown dataset(s) {', '.join(unknown)}; the training data's datasets are: {', '.join(known)}",
            path=where,
            field="data.dataset_fractions",
        )


# Why an eligible utterance may be missing, per task, for the message of a task without examples.
_TASK_NEEDS = {
    Task.ERC: "an utterance with an emotion",
    Task.EMOTION_PREDICTION: "an utterance with an emotion after the first of its dialogue",
    Task.SPEAKER: "an utterance",
}


def stage_example_counts(stage: StageConfig, train: list[Dialogue], builder: ExampleBuilder) -> dict[str, int]:
    """Per task of ``stage``, how many examples it trains on: its share of the eligible
    utterances, as :meth:`Trainer._stage_examples` draws them, counted without building prompts."""
    counts = {}
    for task_name, share in stage.tasks.items():
        task = Task(task_name)
        eligible = sum(builder.eligible(task, d, i, training=True) for d in train for i in range(len(d)))
        counts[task_name] = subset_size(eligible, share)
    return counts


def check_stage_examples(config: TrainConfig, train: list[Dialogue], builder: ExampleBuilder, processes: int, where: Path) -> None:
    """Refuses, before the model loads, a stage task the training data gives no example of, and a
    stage with fewer examples than processes: either would train nothing (an empty stage takes no
    step) while the run still finished and its model card listed the stage. A global batch
    smaller than the processes is refused here too, not once the model has loaded."""
    check_batch_size(config.optim.batch_size, processes)
    refuse_a_speaker_task_of_one_speaker(config, train, where)
    for index, stage in enumerate(config.stages):
        counts = stage_example_counts(stage, train, builder)
        for task_name, count in counts.items():
            if count == 0:
                raise InputError(
                    f"stage {index + 1} trains {task_name}, but the training data has no example of it "
                    f"(it needs {_TASK_NEEDS[Task(task_name)]}): remove the task from the stage, or use other data",
                    path=where,
                    field=f"stages[{index}].tasks.{task_name}",
                )
        if sum(counts.values()) < processes:
            raise InputError(
                f"stage {index + 1} has {sum(counts.values())} example(s), fewer than the {processes} processes: "
                "every process needs one per step; train on more data or with fewer processes",
                path=where,
                field=f"stages[{index}]",
            )


def refuse_a_speaker_task_of_one_speaker(config: TrainConfig, train: list[Dialogue], where: Path) -> None:
    """The speaker task asks who says an utterance among its dialogue's speakers: on monologues
    (one speaker each) its one answer is always right, so its examples teach nothing but took
    steps of the run, which finished as if it had learned the task."""
    if any(len(d.speakers) > 1 for d in train):
        return
    for index, stage in enumerate(config.stages):
        if Task.SPEAKER.value in stage.tasks:
            raise InputError(
                f"stage {index + 1} trains speaker, but every training dialogue has one speaker, so the task has one answer "
                "and nothing to learn: remove it from the stage, or use dialogues between several speakers",
                path=where,
                field=f"stages[{index}].tasks.speaker",
            )


def datasets_without_dev(train: list[Dialogue], dev: list[Dialogue]) -> list[str]:
    """Datasets the run learns (labelled in train) that dev cannot score: a user training on
    several datasets would otherwise not know that the checkpoint was chosen without them."""

    def labelled(dialogues: list[Dialogue]) -> dict[str, None]:
        return dict.fromkeys(d.dataset for d in dialogues if any(u.emotion is not None for u in d.utterances))

    scored = labelled(dev)
    return [dataset or "(no dataset named)" for dataset in labelled(train) if dataset not in scored]


def data_summary(dialogues: list[Dialogue]) -> str:
    """What a run's checkpoints record of one split (``TrainState.data``): its size, in words a
    message can show, and a digest of what prompts, targets and dev scores are built from, so a
    dialogue added, removed or relabelled between a stop and its ``--resume`` is seen. A JSONL
    file's other fields (a timestamp, a note) are left out: editing them changes no step."""
    import hashlib
    import json

    content = [
        [d.dataset, d.id, [[u.speaker, u.text, u.emotion, u.extra.get("original_emotion")] for u in d.utterances]] for d in dialogues
    ]
    digest = hashlib.sha256(json.dumps(content, ensure_ascii=False).encode("utf-8")).hexdigest()
    utterances = sum(len(d.utterances) for d in dialogues)
    labelled = sum(u.emotion is not None for d in dialogues for u in d.utterances)
    return f"{len(dialogues)} dialogue(s), {utterances} utterance(s), {labelled} labelled; sha256 {digest[:16]}"


def data_changes(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """``split data: then -> now`` for each split whose summary differs from the one the run's
    checkpoint recorded; none for a checkpoint that recorded nothing (written before this check)."""
    return [f"{split} data: {saved[split]} -> {now[split]}" for split in now if split in saved and saved[split] != now[split]]


def refuse_changed_data(changes: list[str], where: Path) -> None:
    """Resuming on other dialogues mixes two datasets in one set of weights, and the data order
    (each epoch a permutation of the examples) shifts, so some examples of the epoch under way are
    trained twice and others never; the recipe comparison cannot see it."""
    if changes:
        raise InputError(
            f"the data changed since the run's last checkpoint ({'; '.join(changes)}): restore it to resume, pass --force "
            "to resume on the data as it is now anyway, or start a new run in another output_dir",
            path=where,
        )
