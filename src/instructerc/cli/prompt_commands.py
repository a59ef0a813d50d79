"""``instructerc prompts show``: the exact prompt and target the model sees; a character a terminal
would not show as itself (a control, an invisible or a direction character) is printed as ``\\uXXXX``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from instructerc.cli.options import add_data_options, check_input_file, path_arg

if TYPE_CHECKING:
    from instructerc.data.dialogue import Dialogue
    from instructerc.data.registry import DataSource
    from instructerc.labels.label_set import LabelSet
    from instructerc.prompts.encoding import EncodedExample, SegmentTokenizer
    from instructerc.prompts.example import Example
    from instructerc.prompts.setup import PromptSetup


def register(commands: argparse._SubParsersAction) -> None:
    prompts = commands.add_parser("prompts", help="see the prompts a model is trained and queried with")
    verbs = prompts.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser(
        "show",
        help="print one example's prompt and target",
        description="Print one example's prompt and target. Characters a terminal would not show as themselves (controls, "
        "invisible and text-direction characters) are printed as \\uXXXX.",
    )
    add_data_options(show, positional_dataset=True)
    show.add_argument(
        "--split",
        default="train",
        help="train, dev or test (one JSONL file is every split, prompted as predict prompts it: no training-time demonstration)",
    )
    show.add_argument("--index", type=int, default=0, help="the utterance's position in the split (dialogues in order)")
    show.add_argument("--task", default="erc", choices=["erc", "speaker", "emotion_prediction"])
    show.add_argument("--config", type=path_arg, help="a recipe YAML whose template, retrieval and backbone to use")
    show.add_argument("--model", type=path_arg, help="a trained model directory whose recorded template to use")
    show.add_argument("--template", help="template name (instructerc, dialogue-prefix, dialogue-stream)")
    show.add_argument(
        "--window",
        type=int,
        help="history window: the past utterances the instructerc template shows (dialogue-prefix and dialogue-stream "
        "show the dialogue from its start)",
    )
    for part in ("instruction", "history", "label-statement", "demonstration"):
        show.add_argument(f"--no-{part}", action="store_true", help=f"switch the {part.replace('-', ' ')} off")
    show.set_defaults(handler=show_prompt)


def show_prompt(args: argparse.Namespace) -> int:
    from instructerc.extras import require_extra

    require_extra("prompts", "train")  # the prompt is shown as the model's tokenizer cuts it
    return _show_prompt(args)


def _show_prompt(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from instructerc.cli.options import data_source
    from instructerc.data.registry import label_set_of, load_dialogues
    from instructerc.errors import InputError
    from instructerc.modeling.backbone import load_tokenizer
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.example import Task

    source = data_source(args)
    train = load_dialogues(source, "train")
    setup, tokenizer_path = _prompt_setup(args, source, train)
    setup = replace(setup, template=replace(setup.template, **_template_changes(args)))

    dialogues = train if args.split == "train" else load_dialogues(source, args.split)
    located = [(d, i) for d in dialogues for i in range(len(d))]
    if not 0 <= args.index < len(located):
        raise InputError(f"index {args.index} is outside the split's {len(located)} utterances", field="index")
    dialogue, index = located[args.index]
    if source.name == "jsonl" and source.mapping is None and isinstance(source.label_set, str):
        from instructerc.evaluation.harness import gold_in_model_space

        # --label-set meld on a user file: its gold reaches a unified model's labels through the
        # mapping, as `evaluate` reads the same file, instead of being refused as unmappable.
        dialogue = gold_in_model_space([dialogue], source.label_set, setup.label_set, source.path)[0]
    dialogue = gold_in_model_labels(dialogue, index, setup.label_set, label_set_of(source))
    demonstrations = _demonstrations(args, setup, source, train, dialogue)
    example = setup.builder(demonstrations).example(Task(args.task), dialogue, index)
    tokenizer = SegmentTokenizer(load_tokenizer(tokenizer_path))
    encoded = _encoded(setup, example, tokenizer, source)
    show = visible_to(sys.stdout)
    where = f"{dialogue.dataset} {dialogue.split} dialogue {dialogue.id}, utterance {index}"
    print(show(f"# {where}, task {args.task}, template {setup.template.name}"))
    print(f"# {len(encoded.prompt_ids)} prompt tokens + {len(encoded.target_ids)} target tokens (max_length {setup.max_length})")
    print("--- prompt ---")
    print(show(encoded.example.prompt))
    print("--- target ---")
    print(show(example.target) if example.target is not None else "(no gold label)")
    return 0


def _template_changes(args: argparse.Namespace) -> dict[str, object]:
    """The template settings the options change, each checked as the option it is: an empty
    ``--template "$UNSET"`` is refused, not read as no option."""
    from instructerc.errors import InputError
    from instructerc.labels.registry import did_you_mean
    from instructerc.prompts.templates import template_names

    changes: dict[str, object] = {}
    if args.template is not None:
        if args.template not in template_names():
            hint = did_you_mean(args.template, template_names())
            raise InputError(f"unknown template '{args.template}'{hint} (known: {', '.join(template_names())})", field="template")
        changes["name"] = args.template
    if args.window is not None:
        if args.window < 0:
            raise InputError(f"the history window is a number of utterances, 0 or more, not {args.window}", field="window")
        changes["window"] = args.window
    for part in ("instruction", "history", "label_statement", "demonstration"):
        if getattr(args, f"no_{part}"):
            changes[part] = False
    return changes


def _encoded(setup: "PromptSetup", example: "Example", tokenizer: "SegmentTokenizer", source: "DataSource") -> "EncodedExample":
    """The example's prompt and target as training encodes them. An utterance too long for
    ``max_length`` is named as training names it, by the file and line its dialogue was read from
    and the setting to change: the budget's own error knows only the dialogue's id."""
    from instructerc.prompts.budget import PromptTooLong

    try:
        return setup.encode([example], tokenizer, with_target=example.target is not None)[0]
    except PromptTooLong as error:
        raise error.as_setting_error(source.path) from None


def _prompt_setup(args: argparse.Namespace, source: "DataSource", train: "list[Dialogue]") -> "tuple[PromptSetup, str]":
    """The prompt setup and tokenizer to show: a trained model's (``--model``), else a recipe's or
    the defaults with the data's own labels."""
    from instructerc.data.registry import label_set_of
    from instructerc.errors import InputError
    from instructerc.modeling.backbone import BackboneConfig, resolve_model
    from instructerc.prompts.setup import PromptSetup
    from instructerc.prompts.tasks import speaker_slots
    from instructerc.training.config import TrainConfig

    if args.model and args.config:
        # The model's recorded setup is shown: the recipe would be ignored without a word.
        raise InputError(
            "--model shows a trained model's prompts and --config a recipe's: give one (the model records its recipe's setup)",
            field="config",
        )
    if args.model:
        from instructerc.modeling.model_dir import Manifest, tokenizer_source

        Manifest.load(Path(args.model))  # a folder that is no model directory is told what it is
        return PromptSetup.load(args.model), tokenizer_source(args.model)
    if args.config:
        check_input_file(args.config, "the recipe")
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    label_set = label_set_of(source)
    if label_set is None:
        from instructerc.labels.registry import label_set_names

        raise InputError(
            "no gold emotions to build a label statement from: name the labels with --label-set "
            f"({', '.join(label_set_names())}) or show a trained model's prompt with --model DIR",
            path=source.path,
            field="emotion",
        )
    setup = PromptSetup(config.template, label_set, config.max_length, config.retrieval, config.speaker_variant, speaker_slots(train))
    return setup, resolve_model(config.backbone if args.config else BackboneConfig())


def _demonstrations(
    args: argparse.Namespace, setup: "PromptSetup", source: "DataSource", train: "list[Dialogue]", dialogue: "Dialogue"
) -> dict:
    """The demonstration the prompt of ``dialogue`` shows, if its template uses one."""
    from dataclasses import replace

    from instructerc.errors import InputError
    from instructerc.retrieval.retriever import DemonstrationRetriever

    if not (setup.uses_demonstrations and args.task == "erc"):
        return {}
    one_file = source.path is not None and Path(source.path).is_file()
    # A training prompt (same-label retrieval shows a demonstration of the gold label) only for a
    # folder's train split: training refuses one file, which predict and evaluate read as data to
    # label, whatever --split names, and prompt as inference does.
    training = args.split == "train" and not one_file
    if args.model:  # the pool saved with the model, exactly what inference retrieves from
        from instructerc.retrieval.encoder import SentenceEncoder
        from instructerc.retrieval.index import load_pool

        pool = load_pool(args.model, setup.label_set.labels)
        retriever = DemonstrationRetriever(pool, SentenceEncoder.load(setup.retrieval.encoder), setup.retrieval)
        return retriever.demonstrations([dialogue], training=training)
    if not any(u.emotion is not None for d in train for u in d.utterances):
        raise InputError(
            "the training dialogues have no gold emotions to retrieve a demonstration from: "
            "show the prompt without one (--no-demonstration)",
            path=source.path,
            field="emotion",
        )
    retriever = DemonstrationRetriever.build(train, setup.retrieval)
    # One file is every split at once: its dev dialogue is also in the pool, as train, and
    # would be shown itself with its gold label unless it is excluded as the train copy.
    query = replace(dialogue, split="train") if one_file else dialogue
    return retriever.demonstrations([query], training=training)


# What a terminal does not show as itself: control characters (a carriage return hides the text
# before it, an escape sequence restyles or clears the screen), invisible characters and the
# direction controls (U+202E prints the rest of the line reversed). Tab and line feed are the
# template's own layout; the joiners U+200C and U+200D are left as they shape emoji and scripts.
_UNSEEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def visible(text: str, encoding: str | None = None) -> str:
    """``text`` as it can be read on a terminal: each character it would not show as itself is
    written as ``\\uXXXX``, and each that ``encoding`` cannot write as ``\\uXXXX`` too (so a
    prompt in any script prints, where it would stop with an encoding error)."""
    shown = _UNSEEN.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    if encoding is None:
        return shown
    return shown.encode(encoding, "backslashreplace").decode(encoding)


def visible_to(stream: TextIO) -> Callable[[str], str]:
    """:func:`visible` for what ``stream`` can write."""
    encoding = getattr(stream, "encoding", None)
    return lambda text: visible(text, encoding)


def gold_in_model_labels(dialogue: "Dialogue", index: int, label_set: "LabelSet", read_in: "LabelSet | None") -> "Dialogue":
    """The dialogue with its gold emotions in the labels the model answers in, as it saw them in
    training: a benchmark dialogue shown to a unified model goes through the model's mapping,
    exactly as ``--labels uime`` reads it (MELD's surprise is ``powerful``). ``read_in``: the labels
    the data was read in. A gold emotion of utterance ``index`` with no way into the model's labels
    is an error, never a guess; so is one read in another unified space than the model's, even
    where its word is a label of the model too: MELD's surprise read as the paper's ``powerful``
    is also a feeling-wheel label, but not the one a feeling-wheel model learnt for surprise."""
    from instructerc.data.registry import unify
    from instructerc.errors import InputError
    from instructerc.labels.unified import mapping_of

    mapping = mapping_of(label_set)
    read_mapping = mapping_of(read_in) if read_in is not None else None
    other_space = read_mapping is not None and read_mapping is not mapping
    covered = mapping is not None and mapping.covers(dialogue.dataset)
    already_unified = read_mapping is not None or any("original_emotion" in u.extra for u in dialogue.utterances)
    if covered and not already_unified:
        dialogue = unify([dialogue], mapping)[0]
    gold = dialogue.utterances[index].emotion
    if gold is None or (gold in label_set and not other_space):
        return dialogue
    labels = f"({label_set.name}: {', '.join(label_set.labels)})"
    if other_space:
        read_as = f"--labels {mapping.label_set.name}" if mapping is not None else "drop --labels"
        what = f"is in the {read_in.name} labels, not this model's {labels}: the data is read in another label space ({read_as})"
    elif covered:
        what = f"is not a label of this model {labels}, and the data is read in another label space than the model's (drop --labels)"
    else:
        what = f"is not a label of this model {labels}, and the model's label set has no mapping for {dialogue.dataset}"
    raise InputError(f"the gold emotion '{gold}' of dialogue '{dialogue.id}', utterance {index}, {what}", field="labels")
