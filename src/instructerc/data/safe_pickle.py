"""Loading pickles without letting them run code.

A pickle can call any importable function while it loads. The COSMIC files hold plain data,
so this unpickler refuses every global. One exception is decoded by hand: the EmoryNLP pickle
stores its one-hot speaker vectors as numpy int32 scalars, which pickle encodes as calls to
``numpy.core.multiarray.scalar(numpy.dtype('i4'), raw_bytes)``. Those two names are mapped to
local stand-ins that read the raw bytes into a plain ``int``/``float``; numpy is never imported
and nothing else is ever called.
"""

from __future__ import annotations

import codecs
import io
import pickle
import pickletools
import struct
from pathlib import Path
from typing import Any

from instructerc.errors import InputError

_SCALAR_FORMATS = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q", "f4": "f", "f8": "d", "b1": "?"}


class _NumpyDtypeStandIn:
    """Holds what ``numpy.dtype(code, align, copy)`` and its ``__setstate__`` carry: code and byte order."""

    def __init__(self, code: str, *_args: Any) -> None:
        if not isinstance(code, str) or code not in _SCALAR_FORMATS:
            raise pickle.UnpicklingError(f"numpy scalar of dtype {describe(code)} is not supported")
        self.code = code
        self.byte_order = "<"

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byte_order = "<" if state[1] in ("|", "=") else state[1]


def _numpy_scalar_stand_in(dtype: _NumpyDtypeStandIn, raw: bytes | str) -> int | float | bool:
    if isinstance(raw, str):  # a Python 2 byte string, decoded as latin1 by the unpickler
        raw = raw.encode("latin1")
    if not isinstance(dtype, _NumpyDtypeStandIn) or not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError("malformed numpy scalar")
    fmt = dtype.byte_order + _SCALAR_FORMATS[dtype.code]
    if struct.calcsize(fmt) != len(raw):
        raise pickle.UnpicklingError("numpy scalar of the wrong size")
    return struct.unpack(fmt, raw)[0]


class _SealedCallable:
    """What a pickle gets for a global it may name: a call to ``build`` and nothing else. The bare
    function or class would be one object shared by every load, and a pickle's BUILD opcode sets
    attributes on the object it is given (``__defaults__`` of a function, methods of a class): one
    file could change how every later file in the process is read."""

    __slots__ = ("_build",)

    def __init__(self, build: Any) -> None:
        object.__setattr__(self, "_build", build)

    def __call__(self, *args: Any) -> Any:
        return self._build(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise pickle.UnpicklingError("a pickle may not set attributes on a numpy stand-in")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("a pickle may not set the state of a numpy function or type, only of what it built")


_STAND_INS = {
    ("numpy.core.multiarray", "scalar"): _SealedCallable(_numpy_scalar_stand_in),
    ("numpy._core.multiarray", "scalar"): _SealedCallable(_numpy_scalar_stand_in),
    ("numpy", "dtype"): _SealedCallable(_NumpyDtypeStandIn),
}


class DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds only builtin data (dict, list, tuple, str, int, float, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _STAND_INS.get((module, name))
        if stand_in is None:
            raise pickle.UnpicklingError(f"refused to load global '{module}.{name}': this pickle may run code")
        return stand_in

    def persistent_load(self, pid: Any) -> Any:
        # Without this, the stock error spans two lines; the id itself is untrusted, so it is not shown.
        raise pickle.UnpicklingError("refused a persistent id: a data pickle refers to no outside object")


# Opcodes that store into or read from the memo, with an explicit index as their argument.
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def check_bounds(raw: bytes) -> None:
    """A :class:`pickle.UnpicklingError` unless every memo index and declared length fits the data.

    Refusing code is not enough: the C unpickler sizes its memo by the largest index it is told
    (a 9-byte pickle with index 2**24 allocates 256 MiB) and allocates a declared length before
    reading it (2**62 is a MemoryError). A real pickle's memo holds at most one entry per opcode
    and its strings fit in the file, so both are bounded by the file's size. The opcodes are read
    without building anything (:func:`pickletools.genops`, which also refuses a length longer
    than the bytes left).
    """
    size = len(raw)
    stream = io.BytesIO(raw)
    try:
        for opcode, argument, position in pickletools.genops(stream):
            if opcode.name in _MEMO_OPCODES and isinstance(argument, int) and not 0 <= argument <= size:
                raise pickle.UnpicklingError(f"memo index {argument} at byte {position} is larger than the file ({size} bytes)")
            if opcode.name == "FRAME" and isinstance(argument, int) and argument > size - (position or 0):
                raise CutShort(f"a frame of {argument} bytes at byte {position} is longer than the rest of the file")
    except ValueError as error:  # genops: a declared length past the end, a bad opcode, a truncated argument
        # Read up to the end, the opcodes were still asking for more: the file stops mid-pickle.
        raise (CutShort if stream.tell() >= size else pickle.UnpicklingError)(str(error)) from None


class CutShort(pickle.UnpicklingError):
    """The file ends before the pickle does: what a download or copy stopped part way leaves."""


def _one_line(error: BaseException) -> str:
    """The error's message on one line: the CLI prints one line per error (some of the unpickler's span two)."""
    return " ".join(str(error).split())


def describe(value: Any, limit: int = 40) -> str:
    """How an error message names a value read from untrusted input, in bounded time and length.

    Never ``repr`` such a value whole: a list that holds itself twice, 40 times over (memo-shared,
    a few hundred bytes on disk), expands to 2**40 items; 100,000 nested lists exhaust the recursion
    limit; an int of 20,000 bits exceeds the digit limit of ``str``. So text is shown as a bounded
    prefix, a number as itself when short, a short list of small numbers (a one-hot speaker) as
    itself, and anything else by its type.
    """
    if isinstance(value, str):  # repr escapes newlines, NUL and lone surrogates: the message stays one printable line
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, (bool, float)) or (isinstance(value, int) and value.bit_length() <= 64):
        return repr(value)
    if isinstance(value, int):
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (list, tuple)) and len(value) <= 12 and all(type(item) is int and abs(item) < 1000 for item in value):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} item{'' if len(value) == 1 else 's'}"
    return f"a {type(value).__name__}"


# What a downloaded data file may still be wrapped in; no pickle starts with these bytes (a
# protocol 2+ pickle starts with 0x80, an older one with an opcode letter such as '(' or ']').
_WRAPPERS = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a zip archive"),
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
)


def _compression(raw: bytes) -> str | None:
    return next((name for magic, name in _WRAPPERS if raw.startswith(magic)), None)


def load_data_pickle(path: str | Path) -> Any:
    """Load a pickle of plain data, or fail with an :class:`InputError` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", path=path) from None
    packed = _compression(raw)
    if packed is not None:
        raise InputError(f"is {packed}, not a pickle: unpack it first and give the .pkl it holds", path=path)
    if not raw:
        raise InputError("invalid pickle: the file is empty", path=path)
    try:
        check_bounds(raw)
    except pickle.UnpicklingError as error:
        raise InputError(_unreadable(raw, error), path=path) from None
    try:
        # latin1 keeps Python 2 byte strings byte-for-byte, as the COSMIC files need.
        return DataOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise InputError(f"unsafe or invalid pickle: {_one_line(error)}", path=path) from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as error:
        raise InputError(f"invalid pickle: {_one_line(error)}", path=path) from None
    except MemoryError:
        raise InputError("invalid pickle: it asks for more memory than this machine has", path=path) from None


def _unreadable(raw: bytes, error: pickle.UnpicklingError) -> str:
    """Why the opcodes of ``raw`` do not read as a pickle, as the user can act on it. Not "unsafe"
    where the cause is plain: a file cut short (fetch it again), or a text file given in place of
    the pickle (a benchmark's CSV or a JSONL file, named beside it with --data)."""
    if isinstance(error, CutShort):
        cut = f"the file ends before the pickle does ({_one_line(error)}): cut short by an interrupted download or copy? get it again"
        return f"invalid pickle: {cut}"
    if _is_text(raw):
        # A protocol 0 pickle is text too, but one that reads as such never gets here.
        return (
            f"not a pickle but a text file (a CSV or JSONL file?): {_one_line(error)}; the cosmic-* datasets read the COSMIC "
            "pickles (meld.pkl, ...), --dataset meld, emorynlp or jsonl read text"
        )
    return f"unsafe or invalid pickle: {_one_line(error)}"


def _is_text(raw: bytes) -> bool:
    """Whether the start of ``raw`` is printable UTF-8 text (a character cut at the end aside)."""
    head = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        text = head.decode(raw[:_TEXT_PROBE_BYTES])
    except UnicodeDecodeError:
        return False
    return all(character.isprintable() or character in "\t\r\n" for character in text.removeprefix("\ufeff"))


_TEXT_PROBE_BYTES = 1024
