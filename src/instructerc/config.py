"""Typed, validated configuration read from YAML: one dataclass per concern.

Every field has a default; a YAML file only says what differs. Unknown keys, wrong types and
bad values are errors that name the key (``optim.lr``), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence, TypeVar

from instructerc.errors import InputError
from instructerc.files import HEAD_BYTES, foreign_encoding, refuse_broken_link

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses, checking types."""
    if data is None:
        data = {}
    # Checked before any conversion: dict() would turn [[lr, 0.1]] into {lr: 0.1} silently and
    # fail on 5 with a raw TypeError.
    if not isinstance(data, Mapping):
        raise InputError(f"expected a section of keys (a mapping), got {_shown(data)}", field=where or None)
    data = dict(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        # Sorted by their text: YAML keys may mix types (1, true, a date) that do not compare.
        shown = sorted(unknown, key=lambda key: (str(key), type(key).__name__))
        # The suggestion goes after the known keys: the CLI tells which --set gave a key by
        # looking for it before "; known:", where a suggested name would be mistaken for it.
        raise InputError(f"unknown key(s) {shown}; known: {sorted(fields)}{did_you_mean(shown, fields)}", field=where or None)
    required = [
        name
        for name, f in fields.items()
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data
    ]
    if required:
        raise InputError(f"missing required key(s) {required}", field=where or None)
    values = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        values[name] = _coerce(hints[name], value, key)
    try:
        return cls(**values)
    except TypeError as error:
        raise InputError(str(error), field=where or None) from None
    except InputError as error:
        raise _in_list_item(error, where) from None


def did_you_mean(unknown: list[Any], known: Any) -> str:
    """`` (did you mean 'lr' for 'lrr'?)`` for the unknown keys that are a known one misspelt,
    in another case or with stray spaces (``Seed``, ``'lr '``); empty when none is close."""
    names = {str(name).strip().casefold(): str(name) for name in known}
    pairs = []
    for key in unknown:
        text = str(key).strip().casefold().replace(" ", "_").replace("-", "_")
        close = [names[text]] if text in names else difflib.get_close_matches(text, list(names), n=1, cutoff=0.75)
        if close:
            pairs.append(f"'{names.get(close[0], close[0])}' for {_brief(key)}")
    return f" (did you mean {', '.join(pairs)}?)" if pairs else ""


def _in_list_item(error: InputError, where: str) -> InputError:
    """A section's own checks name their fields as the section is spelled in a recipe
    (``stages.tasks``); for a section that is one item of a list (``stages[1]``) the item is named."""
    section = re.sub(r"\[\d+\]", "", where)
    if section == where or error.field is None or not (error.field == section or error.field.startswith(section + ".")):
        return error
    return InputError(error.message, path=error.path, line=error.line, field=where + error.field[len(section) :])


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {_brief(value)}"


def _brief_repr() -> reprlib.Repr:
    brief = reprlib.Repr()
    brief.maxlevel, brief.maxlist, brief.maxtuple, brief.maxdict, brief.maxset = 2, 4, 4, 4, 4
    brief.maxstring = brief.maxother = brief.maxlong = 60
    return brief


_BRIEF = _brief_repr()


def _brief(value: Any) -> str:
    """A value as an error shows it, bounded: YAML aliases nest a few lines into a structure whose
    full ``repr`` is gigabytes (a billion-laughs recipe), which a plain ``{value!r}`` would build."""
    return _BRIEF.repr(value)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key)
            except InputError as error:
                errors.append(error)
        raise errors[0] if errors else InputError("must not be null", field=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"expected a list, got {_brief(value)}", field=key)
        item = args[0] if args else Any
        if dataclasses.is_dataclass(item) and None in value:
            # An empty section means "all defaults"; an empty list item is a slip (a stray "-")
            # that would add a whole default entry, e.g. one more stage of training.
            raise InputError("an empty item: give its keys, or remove the line", field=f"{key}[{value.index(None)}]")
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"expected a mapping, got {_brief(value)}", field=key)
        key_type, value_type = args or (Any, Any)
        return {_coerce(key_type, k, key): _coerce(value_type, v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float:
        return _number(value, key)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"expected an integer, got {_brief(value)}", field=key)
        # Every count and size ends up in a 64-bit integer (torch, numpy, the tokenizer), which
        # fails far from the recipe, or after the model has loaded, on a larger one.
        if not -(2**63) <= value < 2**63:
            raise InputError(f"{_brief(value)} is too large a number (at most {2**63 - 1})", field=key)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"expected true or false, got {_brief(value)}", field=key)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"expected a string, got {_brief(value)}{_quote_hint(value)}", field=key)
        return value
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected a number, got {_brief(value)}", field=key)
    try:
        return float(value)
    except OverflowError:  # an integer of 309 digits or more has no float
        raise InputError(f"{_brief(value)} is too large a number", field=key) from None


def _quote_hint(value: Any) -> str:
    """Why a name written ``on`` or ``no`` is not a string: YAML 1.1 reads those words unquoted as
    booleans, and "expected a string, got True" points at a line that holds no ``True``
    (a grid axis with values ``on`` and ``off`` is the usual case)."""
    if isinstance(value, bool):
        return " (in YAML an unquoted yes, no, on, off, true or false is a boolean: quote it for a name)"
    return ""


def to_mapping(config: Any) -> Any:
    """A dataclass config as plain YAML/JSON-ready data."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_mapping(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_mapping(v) for v in config]
    if isinstance(config, dict):
        return {k: to_mapping(v) for k, v in config.items()}
    if isinstance(config, Path):
        return str(config)
    return config


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; every problem is an :class:`InputError` naming the file."""
    import yaml

    path = Path(path)
    refuse_broken_link(path)
    if path.is_dir():
        raise InputError("is a folder; a YAML file is needed here", path=path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    try:
        raw = path.read_bytes()
        problem = foreign_encoding(raw[:HEAD_BYTES])
        if problem is not None:
            raise InputError(problem, path=path)
        text = raw.decode("utf-8")
        data = parse_yaml(text)
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise InputError(f"not UTF-8 text (byte {raw[error.start]:#04x}): save it as UTF-8", path=path, line=line) from None
    except OSError as error:
        raise InputError(f"cannot read it: {error.strerror or error}", path=path) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else _reader_line(error, text)
        raise InputError(f"invalid YAML: {_one_line(error)}", path=path, line=line) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("the top level must be a mapping", path=path)
    return data


def yaml_line(path: str | Path, steps: Sequence[str | int], known: Collection[str] | None = None) -> int | None:
    """The line (from 1) where a YAML file writes the place ``steps`` names (``['stages', 0,
    'epochs']``), or else the deepest section on the way that it writes; ``None`` for none or a
    file that no longer reads. With ``known`` (a section's key names): the line of the first key
    the section writes that is not one of them, or ``None``. Keys merged in with ``<<`` are found
    where they are written."""
    import yaml

    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    line = None
    for step in steps:
        found = _yaml_child(node, step, set())
        if found is None:
            return line if known is None else None
        mark, node = found
        line = mark.start_mark.line + 1
    if known is None:
        return line
    keys = node.value if isinstance(node, yaml.MappingNode) else []
    stray = [key for key, _ in keys if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE and key.value not in known]
    return stray[0].start_mark.line + 1 if stray else None


_MERGE = "tag:yaml.org,2002:merge"


def _yaml_child(node: Any, step: str | int, seen: set[int]) -> tuple[Any, Any] | None:
    """(the node to take the line of, the value node) of ``step`` in ``node``: a key of a mapping,
    its own before the ones merged into it (as YAML reads them), or an item of a list."""
    import yaml

    if isinstance(node, yaml.SequenceNode) and isinstance(step, int):
        return (node.value[step], node.value[step]) if 0 <= step < len(node.value) else None
    if not isinstance(node, yaml.MappingNode) or not isinstance(step, str) or id(node) in seen:
        return None
    seen.add(id(node))  # a mapping may merge itself in through an alias
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE and key.value == step:
            return key, value
    for key, value in node.value:
        if key.tag == _MERGE:
            for merged_in in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                found = _yaml_child(merged_in, step, seen)
                if found is not None:
                    return found
    return None


def _one_line(error: Any) -> str:
    """What is wrong, on one line: a reader error (a control character) has no ``problem`` and its
    text spans lines ("in <unicode string>, position 1")."""
    problem = getattr(error, "problem", None)
    if problem is None and isinstance(getattr(error, "character", None), int):
        problem = f"{error.reason} (character U+{error.character:04X})"
    return " ".join(str(problem or error).split())


def _reader_line(error: Any, text: str) -> int | None:
    """The line of a reader error, which gives only a character position in the whole text."""
    position = getattr(error, "position", None)
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else None


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key repeated in one mapping (raises ``yaml.YAMLError``).

    Plain YAML keeps the last of two equal keys, so a second ``optim:`` section would silently
    drop the whole first one."""
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        # PyYAML parses and builds nested values recursively: [[[[...]]]] a few thousand deep
        # exhausts Python's stack.
        raise yaml.YAMLError("values nested too deeply") from None


@functools.cache
def _unique_key_loader() -> type:
    # Built on first use: yaml is imported lazily, like every dependency of a command.
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            if isinstance(node, yaml.MappingNode):
                _refuse_repeated_keys(self, node)
            return super().construct_mapping(node, deep=deep)

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except yaml.YAMLError:
                raise
            except (ValueError, KeyError, IndexError, AttributeError, TypeError, OverflowError) as error:
                # PyYAML's scalar constructors fail with bare Python errors on a value their
                # pattern let through (2024-13-45 as a date, !!int "", !!bool x); as a YAMLError
                # it is reported with its line like any other.
                raise _unreadable(node, error) from None

        def construct_yaml_int(self, node: Any) -> int:
            _refuse_surprising_number(node)
            return super().construct_yaml_int(node)

        def construct_yaml_float(self, node: Any) -> float:
            _refuse_surprising_number(node)
            return super().construct_yaml_float(node)

    UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", UniqueKeyLoader.construct_yaml_int)
    UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", UniqueKeyLoader.construct_yaml_float)
    return UniqueKeyLoader


def _unreadable(node: Any, error: Exception) -> Exception:
    import yaml

    kind = str(node.tag).rsplit(":", 1)[-1]
    if not isinstance(node, yaml.ScalarNode):
        return yaml.constructor.ConstructorError(None, None, f"this value is not a valid {kind}", node.start_mark)
    # Only a date's error says more than its text does ("month must be in 1..12").
    reason = f" ({error})" if kind == "timestamp" and isinstance(error, ValueError) else ""
    return yaml.constructor.ConstructorError(
        None, None, f"'{node.value}' is not a valid {kind}{reason}; quote it for a string", node.start_mark
    )


def _refuse_surprising_number(node: Any) -> None:
    """YAML 1.1 reads ``010`` as octal 8 and ``1:30`` as 90 (base 60), while ``08`` stays a string:
    a seed or size written so would silently be another number, so such a number is refused."""
    import yaml

    text = str(node.value).replace("_", "").lstrip("+-")
    if ":" in text:
        reason = "YAML reads digits separated by ':' as a base-60 number"
    elif len(text) > 1 and text[0] == "0" and text[1:].isdigit():
        reason = "YAML reads a number with a leading zero as octal (010 is 8); write it without the zero"
    else:
        return
    raise yaml.constructor.ConstructorError(None, None, f"'{node.value}': {reason}, or quote it for a string", node.start_mark)


def _refuse_repeated_keys(loader: Any, node: Any) -> None:
    """Checked on the mapping's own keys, before merge keys (``<<``) are flattened into it: a key
    written beside ``<<: *base`` overrides the merged one on purpose."""
    import yaml

    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # SafeLoader reports an unhashable key itself
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {first_line[key]})", key_node.start_mark
            )
        first_line[key] = line
