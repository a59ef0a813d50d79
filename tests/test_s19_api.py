"""The Python API and ``instructerc predict`` as a careless user meets them (probe s19): long
dialogues, huge utterances, tables and near-JSON given as JSONL, names typed in another case,
paths given as strings, hand-built dialogues written out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.jsonl import infer_label_set, iter_jsonl, read_jsonl, write_jsonl
from instructerc.errors import InputError
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts import budget, fitting
from instructerc.prompts.budget import encode_example
from instructerc.prompts.encoding import SegmentTokenizer
from instructerc.prompts.example import Example, Part, Task
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig, build_template
from instructerc.retrieval.index import RetrievalConfig
from tiny import tiny_model_dir, tiny_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, TemplateConfig(name="dialogue-stream", demonstration=False))


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_directory(model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def segments() -> SegmentTokenizer:
    return SegmentTokenizer(tiny_tokenizer())


def long_dialogue(turns: int, name: str = "long") -> Dialogue:
    # Lines of different lengths, so the budget's steps land on different lines.
    texts = ["Hi!", "How are you?", "Oh no, that is terrible.", "Great news! I am fine, thanks.", "So sad."]
    return Dialogue(name, "", "test", tuple(Utterance("Ann Bob Cat".split()[k % 3], texts[k % 5]) for k in range(turns)))


# -- long dialogues ---------------------------------------------------------------------------------
def test_a_prompt_of_a_long_dialogue_builds_no_more_history_than_it_can_hold() -> None:
    """Every prompt of a dialogue of thousands of turns built (and tokenized) all earlier lines,
    and the budget then measured the prompt again for each line it dropped: a 3,000-turn
    dialogue spent minutes before the model ran. A prompt of max_length tokens holds at most
    max_length lines, so no more are built."""
    setup = PromptSetup(TemplateConfig(name="dialogue-stream", demonstration=False), MELD, 48, RetrievalConfig())
    example = setup.builder().erc(long_dialogue(2000), 1999)
    assert sum(s.part is Part.HISTORY for s in example.segments) <= 48 + 1  # one over: certain not to fit


class _CountedIds(tuple):
    """Token ids that count how often their length is asked."""

    asked = 0

    def __len__(self) -> int:
        _CountedIds.asked += 1
        return tuple.__len__(self)


class _CountingTokenizer(SegmentTokenizer):
    def ids(self, text: str) -> tuple[int, ...]:
        return _CountedIds(super().ids(text))


def test_budgeting_a_prompt_measures_its_history_once() -> None:
    """Dropping the oldest lines one step at a time summed the whole prompt again per step: the
    square of the history per prompt, the cube per dialogue."""
    tokenizer = _CountingTokenizer(tiny_tokenizer())
    template = build_template(TemplateConfig(name="dialogue-stream", demonstration=False), MELD)  # no line budget
    example = Example(*_erc_fields(template, long_dialogue(400)))
    _CountedIds.asked = 0
    encoded = encode_example(example, tokenizer, max_length=64, history_stride=1, with_target=False)
    assert len(encoded.prompt_ids) <= 64
    assert _CountedIds.asked <= 5 * len(example.segments)  # measured a few times, not once per dropped line


def _erc_fields(template, dialogue: Dialogue, index: int = -1) -> tuple:
    index = index % len(dialogue)
    return (Task.ERC, tuple(template.erc(dialogue, index, None)), None, dialogue.dataset, dialogue.id, index, None)


def _naive_drop_history(segments, budget_tokens, stride):
    """The budget's rule as it was first written: drop the oldest ``stride`` lines until it fits."""
    history = [i for i, s in enumerate(segments) if s.segment.part is Part.HISTORY]
    kept = segments
    for dropped in range(stride, len(history) + stride, stride):
        gone = set(history[:dropped])
        kept = [s for i, s in enumerate(segments) if i not in gone]
        if sum(len(s.ids) for s in kept) <= budget_tokens:
            break
    return kept


@pytest.mark.parametrize("name", ["dialogue-stream", "dialogue-prefix", "instructerc"])
@pytest.mark.parametrize("stride", [1, 3, 16])
@pytest.mark.parametrize("speakers", ["name", "index"])
def test_prompts_of_a_long_dialogue_are_those_of_the_whole_history(
    segments: SegmentTokenizer, monkeypatch: pytest.MonkeyPatch, name: str, stride: int, speakers: str
) -> None:
    """Leaving out lines no prompt could keep, and measuring once, keep every prompt as it was."""
    config = TemplateConfig(name=name, demonstration=False, window=500, history_stride=stride, speaker_format=speakers)
    setup = PromptSetup(config, MELD, 120, RetrievalConfig())
    dialogue = long_dialogue(160)
    items = range(len(dialogue))
    fast = setup.encode([setup.builder().erc(dialogue, i) for i in items], segments, with_target=False)
    whole = build_template(config, MELD)
    monkeypatch.setattr(budget, "_drop_history", _naive_drop_history)
    slow = [
        encode_example(
            Example(*_erc_fields(whole, dialogue, i)),
            segments,
            120,
            stride,
            with_target=False,
        )
        for i in items
    ]
    assert [e.prompt_ids for e in fast] == [e.prompt_ids for e in slow]


# -- huge utterances --------------------------------------------------------------------------------
def _longest_tokenized(monkeypatch: pytest.MonkeyPatch, tokenizer: SegmentTokenizer) -> list[int]:
    seen = [0]
    ids = tokenizer.ids

    def recording(text: str) -> tuple[int, ...]:
        seen[0] = max(seen[0], len(text))
        return ids(text)

    monkeypatch.setattr(tokenizer, "ids", recording)
    return seen


def test_a_huge_utterance_is_cut_without_being_tokenized_whole(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 50 MB line took 100 s and 7.7 GB of memory with the shipped model, to tokenize its text
    whole, twice, and keep 2,000 characters of it."""
    huge = "Great news " * 300_000  # 3.3 million characters
    dialogue = Dialogue("d", "", "test", (Utterance("Ann", "Hi!"), Utterance("Bob", huge), Utterance("Ann", "So sad.")))
    seen = _longest_tokenized(monkeypatch, predictor.segments)
    [predicted] = predictor.predict([dialogue])
    assert seen[0] <= fitting._LONGEST_TOKENIZED + 1000
    assert [p.truncated for p in predicted] == [False, True, False]
    cut = predicted[1].cut_text
    assert cut.startswith("Great news Great") and cut.endswith("Great news") and fitting.CUT_MARK in cut and len(cut) < 10_000
    assert all(math.isclose(sum(p.scores.values()), 1.0, abs_tol=1e-5) for p in predicted)
    # The same cut whichever way the utterance is asked about.
    [alone] = predictor.predict_at([(dialogue, 1)])
    assert (alone.cut_text, alone.scores) == (cut, pytest.approx(predicted[1].scores, abs=1e-5))


def test_a_huge_speaker_name_is_cut_in_every_line_without_being_tokenized_whole(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "Bob" * 500_000
    dialogue = Dialogue("d", "", "test", (Utterance(name, "Hi!"), Utterance("Ann", "Oh no."), Utterance(name, "So sad.")))
    seen = _longest_tokenized(monkeypatch, predictor.segments)
    [predicted] = predictor.predict([dialogue])
    assert seen[0] <= fitting._LONGEST_TOKENIZED + 1000
    assert [p.truncated for p in predicted] == [True, False, True]
    assert [p.cut_text for p in predicted] == ["Hi!", None, "So sad."]


def test_a_text_a_long_context_holds_whole_is_not_cut(segments: SegmentTokenizer) -> None:
    """Cutting a text to _LONGEST_TOKENIZED characters first must not cut what a model of a very
    long context would hold whole: a prompt that keeps all of the first cut gets the text back."""
    setup = PromptSetup(TemplateConfig(name="dialogue-stream", demonstration=False), MELD, 4_000_000, RetrievalConfig())
    text = "ab " * 400_000
    dialogue = Dialogue("d", "", "test", (Utterance("Ann", "Hi!"), Utterance("Bob", text.strip())))
    items = [(dialogue, 0), (dialogue, 1)]

    def encode(asked):
        return setup.encode_each([setup.builder().erc(d, i) for d, i in asked], segments, with_target=False)

    encoded, cuts = fitting.encode_fitting(items, encode, segments)
    assert cuts == [None, None]
    assert text.strip() in encoded[1].example.prompt


# -- files that are not JSONL -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("turns.csv", "speaker,text,dialogue\nAnn,hi,1\n", ":1: not valid JSON (Expecting value at column 1); a CSV or TSV table?"),
        ("turns.jsonl", "speaker\ttext\nAnn\thi\n", ":1: not valid JSON (Expecting value at column 1); a CSV or TSV table?"),
        (
            "array.jsonl",
            '{"utterances": [{"speaker": "A", "text": "x"}]},\n',
            ":1: not valid JSON (Extra data at column 48); more follows the line's JSON value (a comma left from a JSON array?",
        ),
        ("comment.jsonl", '{"utterances": [{"speaker": "A", "text": "x"}]} // note\n', "; more follows the line's JSON value (JSONL holds"),
        ("braces.jsonl", '"utterances": [{"speaker": "A", "text": "x"}]\n', ":1: not valid JSON (Extra data at column 13)\n"),
        (
            "two.jsonl",
            '{"utterances": [{"speaker": "A", "text": "x"}]} {"utterances": [{"speaker": "A", "text": "y"}]}\n',
            "(two dialogues on one line?",
        ),
        (
            "python.jsonl",
            "{'utterances': [{'speaker': 'A', 'text': 'x'}]}\n",
            "; keys and strings in single quotes: JSON needs double quotes",
        ),
        ("book.xlsx", "PK\x03\x04\x14\x00\x06\x00binary", ": a ZIP archive (an Excel .xlsx workbook, a .zip), not text"),
    ],
)
def test_a_file_that_is_not_jsonl_is_named_for_what_it_is(
    run_cli, model_dir: Path, tmp_path: Path, name: str, content: str, said: str
) -> None:
    """Each was only "not valid JSON (Expecting value at column 1)" (the spreadsheet too)."""
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n", encoding="utf-8")
    result = run_cli("predict", "--input", source, "--output", out, "--model", model_dir, "--no-progress")
    assert result.code == 2, result
    assert result.err.startswith(f"instructerc: error: {source}") and said in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert out.read_text(encoding="utf-8") == "earlier\n"


def test_a_later_line_that_is_not_json_gets_no_table_hint(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"utterances": [{"speaker": "A", "text": "x"}]}\nAnn,hi\n', encoding="utf-8")
    with pytest.raises(InputError, match=r":2: not valid JSON \(Expecting value at column 1\)$"):
        list(iter_jsonl(source))


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("1", "'speaker' must be a string, not a number (write it in quotes: \"1\")"),
        ("2.5", "'speaker' must be a string, not the number 2.5 (write it in quotes: \"2.5\")"),
        ("null", "'speaker' must be a string, not null"),
        ("true", "'speaker' must be a string, not true"),
        ('["Ann"]', "'speaker' must be a string, not a list"),
    ],
)
def test_a_speaker_that_is_no_string_says_what_it_is(tmp_path: Path, value: str, said: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(f'{{"utterances": [{{"speaker": {value}, "text": "hi"}}]}}\n', encoding="utf-8")
    with pytest.raises(InputError) as error:
        list(iter_jsonl(source))
    assert str(error.value) == f"{source}:1: field 'utterances[0].speaker': {said}"


# -- names typed in another case --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["data", "stats", "--dataset", "MELD"], "argument --dataset: unknown dataset 'MELD' (did you mean 'meld'?) (known: meld,"),
        (["data", "stats", "--dataset", "emory-nlp"], "unknown dataset 'emory-nlp' (did you mean 'emorynlp'?)"),
        (["data", "stats", "--dataset", "cosmic_meld"], "unknown dataset 'cosmic_meld' (did you mean 'cosmic-meld'?)"),
        (["data", "stats", "--dataset", "meld", "--labels", "UIME"], "--labels: unknown label space 'UIME' (did you mean 'uime'?)"),
        (["data", "stats", "--dataset", "meld", "--labels", "uime:feelingwheel"], "mapping 'feelingwheel' (did you mean 'feeling-wheel'?)"),
        (["predict", "--label-set", "UIME"], "argument --label-set: unknown label set 'UIME' (did you mean 'uime'?)"),
        (["prompts", "show", "--template", "Dialogue-Stream"], "argument --template: unknown template 'Dialogue-Stream' (did you mean"),
        (["prompts", "show", "--template", ""], "argument --template: unknown template '' (known: instructerc,"),
        (["prompts", "show", "--window", "-3"], "argument --window: the history window is a number of utterances, 0 or more, not -3"),
    ],
)
def test_a_name_typed_in_another_case_gets_the_one_to_type(run_cli, model_dir: Path, tmp_path: Path, argv: list[str], said: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"utterances": [{"speaker": "A", "text": "x", "emotion": "joy"}]}\n', encoding="utf-8")
    if argv[0] == "predict":
        argv = [*argv, "--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--model", str(model_dir)]
    elif argv[0] == "prompts":
        argv = [*argv, "--dataset", "jsonl", "--data", str(source)]
    else:
        argv = [*argv, "--data", str(tmp_path)]
    result = run_cli(*argv)
    assert result.code == 2, result
    assert said in result.err, result.err


# -- the file functions from Python ------------------------------------------------------------------
def test_the_jsonl_functions_take_a_str_path_and_name_what_is_no_path(tmp_path: Path) -> None:
    """``read_jsonl("dialogues.jsonl", "test")`` (the predictor's own hint names read_jsonl) failed
    with "'str' object has no attribute 'is_dir'"."""
    file = tmp_path / "dialogues.jsonl"
    written = write_jsonl([Dialogue("d1", "", "test", (Utterance("Ann", "Hi!", emotion="joy"),))], str(file))
    assert written == 1
    [dialogue] = read_jsonl(str(file), "validation")
    assert (dialogue.id, dialogue.split) == ("d1", "dev")
    assert [d.id for _, d in iter_jsonl(str(file))] == ["d1"]
    assert infer_label_set(str(file)).labels == ("joy",)
    with pytest.raises(TypeError, match="path must be a path .a str or pathlib.Path., not NoneType"):
        read_jsonl(None, "test")
    with pytest.raises(InputError, match="field 'path': an empty path"):
        read_jsonl("", "test")


@pytest.mark.parametrize(
    ("dialogues", "error", "said"),
    [
        ([Dialogue("a", "", "test", (Utterance("A", "x", extra={"w": float("nan")}),))], InputError, "Out of range float values"),
        ([Dialogue("a", "", "test", (Utterance("A", "x", extra={"w": {1, 2}}),))], InputError, "Object of type set is not JSON"),
        (
            [Dialogue("a", "", "test", (Utterance("A", "x"),)), Dialogue("b", "", "test", (Utterance(1, "x"),))],
            InputError,
            r"field 'dialogues\[1\].utterances\[0\].speaker': dialogue 'b' would not read back: 'speaker' must be a string",
        ),
        ([Dialogue("a", None, "test", (Utterance("A", "x"),))], InputError, r"'dialogues\[0\].dataset'.*must be a non-empty string"),
        ([Dialogue("a", "", "test", ())], InputError, "'utterances' must be a non-empty list"),
        ([{"id": "a"}], TypeError, r"dialogues\[0\] must be a Dialogue, not dict"),
        (Dialogue("a", "", "test", (Utterance("A", "x"),)), TypeError, "dialogues must be a list of Dialogue objects"),
    ],
)
def test_write_jsonl_refuses_what_would_not_read_back_and_keeps_the_earlier_file(tmp_path: Path, dialogues, error: type, said: str) -> None:
    """A NaN was written as ``NaN`` and a number for a speaker as a number: the toolkit's own
    reader then refused the file it had written."""
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n", encoding="utf-8")
    with pytest.raises(error, match=said):
        write_jsonl(dialogues, out)
    assert out.read_text(encoding="utf-8") == "earlier\n"


def test_what_write_jsonl_writes_reads_back_the_same(tmp_path: Path) -> None:
    dialogue = Dialogue(
        "d1",
        "meld",
        "test",
        (Utterance("José", "Hi!\u2028there", emotion="joy", extra={"n": [1, 2.5, None], "k": {"x": True}}),),
        extra={"note": "ü"},
    )
    out = tmp_path / "out.jsonl"
    write_jsonl([dialogue], out)
    [back] = read_jsonl(out, "test")
    assert (back.id, back.dataset, back.utterances, dict(back.extra)) == ("d1", "meld", dialogue.utterances, {"note": "ü"})
    assert json.loads(out.read_text(encoding="utf-8"))["utterances"][0]["text"] == "Hi!\u2028there"
