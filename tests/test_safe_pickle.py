"""The data-only unpickler: plain data and numpy scalars load, anything that could run code is refused."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.safe_pickle import load_data_pickle
from instructerc.errors import InputError


class RunsShell:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"echo pwned > '{self.marker}'",))


class RunsExec:
    """Unpickling this runs Python code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class WritesFile:
    """Unpickling this calls ``Path.write_text``: no shell, no exec, still a side effect."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


PAYLOADS = [RunsShell, RunsExec, WritesFile]


def write_pickle(path: Path, value: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    return path


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_the_payloads_do_run_code_with_a_plain_unpickler(tmp_path: Path, payload: type) -> None:
    """The control: without the safe loader each payload leaves its marker (so the next test means something)."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps([payload(marker)]))
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, payload: type, protocol: int) -> None:
    marker = tmp_path / "marker"
    file = write_pickle(tmp_path / "evil.pkl", [{"harmless": 1}, payload(marker)], protocol)

    with pytest.raises(InputError, match="refused") as error:
        load_data_pickle(file)

    assert error.value.path == str(file)
    assert not marker.exists(), "the payload ran"


def test_the_cli_refuses_a_cosmic_pickle_that_would_run_code(run_cli, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "cosmic").mkdir()
    file = write_pickle(tmp_path / "cosmic" / "meld.pkl", [RunsShell(marker)])

    result = run_cli("data", "stats", "--dataset", "cosmic-meld", "--data", tmp_path)

    assert result.code == 2
    assert result.err.splitlines() == [
        f"instructerc: error: {file}: unsafe or invalid pickle: refused to load global '{os.system.__module__}.system': this pickle may run code"  # noqa: E501
    ]
    assert not marker.exists()


PLAIN = [
    {"d1": ["M", "F"], 7: [0, 1, 2]},
    {"d1": [0.5, -1.25]},
    ["text with ’ and é", "", None, True, False],
    (1, (2, 3)),
    [10**30, -(2**63)],
]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_loads_unchanged(tmp_path: Path, protocol: int) -> None:
    file = write_pickle(tmp_path / "plain.pkl", PLAIN, protocol)
    assert load_data_pickle(file) == PLAIN


def test_python2_byte_strings_are_read_as_latin1(tmp_path: Path) -> None:
    """COSMIC's MELD text is Python 2 bytes (here ``it\\x92s``); latin1 keeps each byte as one character."""
    file = tmp_path / "py2.pkl"
    # PROTO 2, EMPTY_LIST, SHORT_BINSTRING b"it\x92s", APPEND, STOP
    file.write_bytes(b"\x80\x02]U\x04it\x92sa.")

    assert load_data_pickle(file) == ["it\x92s"]


@pytest.mark.parametrize(
    "global_name",
    [
        "numpy.core.multiarray\n_reconstruct",
        "numpy._core.multiarray\n_reconstruct",
        "numpy\nndarray",
        "numpy\nload",
        "numpy.lib.format\nread_array",
        "numpy.core.multiarray\nscalar_but_not_quite",
        "numpy.testing\nassert_equal",
        "builtins\neval",
        "builtins\nset",
        "_codecs\nencode",
        "copyreg\n_reconstructor",
    ],
)
def test_every_other_global_is_refused(tmp_path: Path, global_name: str) -> None:
    file = tmp_path / "global.pkl"
    file.write_bytes(b"c" + global_name.encode() + b"\n.")  # GLOBAL, STOP: only the lookup, no call

    with pytest.raises(InputError, match="refused to load global") as error:
        load_data_pickle(file)
    assert global_name.replace("\n", ".") in str(error.value)


@pytest.mark.parametrize(("protocol", "refused"), [(2, "multiarray._reconstruct"), (5, "numeric._frombuffer")])
def test_a_real_numpy_array_is_refused(tmp_path: Path, protocol: int, refused: str) -> None:
    import numpy

    file = write_pickle(tmp_path / "array.pkl", numpy.arange(3), protocol)

    with pytest.raises(InputError, match=rf"refused to load global 'numpy\._?core\.{refused}'"):
        load_data_pickle(file)


def _assert_plain(value: Any) -> None:
    """No numpy object anywhere: containers of exactly int, float, bool and str."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _assert_plain(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _assert_plain(key)
            _assert_plain(item)
    else:
        assert type(value) in (int, float, bool, str), type(value)


def test_numpy_scalars_decode_to_plain_numbers(tmp_path: Path) -> None:
    import numpy

    value = {
        "speakers": [[numpy.int32(1), numpy.int32(0)], [numpy.int32(0), numpy.int32(1)]],
        "others": [numpy.int64(-3), numpy.uint8(255), numpy.float32(0.5), numpy.float64(-2.25), numpy.bool_(True)],
        "big_endian": numpy.dtype(">i4").type(7),
    }
    file = write_pickle(tmp_path / "scalars.pkl", value, protocol=4)

    loaded = load_data_pickle(file)

    assert loaded == {"speakers": [[1, 0], [0, 1]], "others": [-3, 255, 0.5, -2.25, True], "big_endian": 7}
    assert type(loaded["speakers"][0][0]) is int
    _assert_plain(loaded)


def test_numpy_1_module_name_decodes_too(tmp_path: Path) -> None:
    """The EmoryNLP pickle was written by numpy 1 (``numpy.core.multiarray.scalar``); numpy 2 writes ``numpy._core``."""
    import numpy

    raw = pickle.dumps([numpy.int32(1), numpy.int32(-5)], protocol=3)  # protocol 3: text GLOBAL opcodes
    raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\nscalar" in raw
    file = tmp_path / "numpy1.pkl"
    file.write_bytes(raw)

    loaded = load_data_pickle(file)

    assert loaded == [1, -5]
    _assert_plain(loaded)


def test_python2_numpy_scalar_decodes(tmp_path: Path) -> None:
    """A Python 2 pickle carries the scalar's bytes as a str (latin1-decoded): still a plain int."""
    file = tmp_path / "py2_numpy.pkl"
    file.write_bytes(
        b"\x80\x02"
        b"cnumpy.core.multiarray\nscalar\n"
        b"cnumpy\ndtype\nU\x02i4K\x00K\x01\x87R"  # dtype('i4', 0, 1)
        b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # __setstate__((3, '<', ...))
        b"U\x04\x07\x01\x00\x00\x86R."  # scalar(dtype, b'\x07\x01\x00\x00')
    )

    assert load_data_pickle(file) == 263


def test_numpy_object_dtype_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "object_dtype.pkl"
    file.write_bytes(b"\x80\x02cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R.")

    with pytest.raises(InputError, match="dtype 'O8' is not supported"):
        load_data_pickle(file)


def test_numpy_scalar_stand_in_rejects_other_arguments(tmp_path: Path) -> None:
    file = tmp_path / "bad_scalar.pkl"
    file.write_bytes(b"\x80\x02cnumpy.core.multiarray\nscalar\nU\x02i4C\x04\x01\x00\x00\x00\x86R.")

    with pytest.raises(InputError, match="malformed numpy scalar"):
        load_data_pickle(file)


def test_the_real_emorynlp_pickle_holds_no_numpy_objects(data_root: Path) -> None:
    data = load_data_pickle(data_root / "cosmic" / "emorynlp.pkl")
    speakers = data[0]
    first = next(iter(speakers.values()))
    assert first[0] == [1, 0, 0, 0, 0, 0, 0, 0, 0]
    _assert_plain(speakers)


@pytest.mark.parametrize(("content", "message"), [(None, "file not found"), (b"", "invalid pickle"), (b"\x80\x04\x95", "invalid pickle")])
def test_missing_empty_or_truncated_files_are_input_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    file = tmp_path / "data.pkl"
    if content is not None:
        file.write_bytes(content)

    with pytest.raises(InputError, match=message) as error:
        load_data_pickle(file)
    assert error.value.path == str(file)


# -- memory bombs: indexes and lengths bounded by the file's size -----------------------------------
def _pack(fmt: str, value: int) -> bytes:
    import struct

    return struct.pack(fmt, value)


MEMO_BOMB = b"\x80\x02N" + b"r" + _pack("<I", 2**24) + b"."  # PROTO 2, NONE, LONG_BINPUT 2**24, STOP: 9 bytes


def test_the_memo_bomb_is_nine_bytes_and_does_allocate_with_a_plain_unpickler() -> None:
    import tracemalloc

    assert len(MEMO_BOMB) == 9
    tracemalloc.start()
    try:
        assert pickle.loads(MEMO_BOMB) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak > 100 * 2**20, "the payload is a real bomb: the stock unpickler allocates its memo"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (MEMO_BOMB, "memo index 16777216"),
        (b"\x80\x02N" + b"p16777216\n" + b".", "memo index 16777216"),  # protocol 0's PUT, the index in text
        (b"\x80\x02" + b"j" + _pack("<I", 2**30) + b".", "memo index"),  # LONG_BINGET of an index never stored
        (b"\x80\x04\x8d" + _pack("<Q", 2**62) + b"abc.", "bytes"),  # BINUNICODE8
        (b"\x80\x04\x8e" + _pack("<Q", 2**62) + b"abc.", "bytes"),  # BINBYTES8
        (b"\x80\x05\x96" + _pack("<Q", 2**40) + b"abc.", "bytes"),  # BYTEARRAY8
        (b"\x80\x04\x95" + _pack("<Q", 2**62) + b"N.", "frame of"),  # FRAME
    ],
    ids=["long-binput", "put", "long-binget", "binunicode8", "binbytes8", "bytearray8", "frame"],
)
def test_indexes_and_lengths_beyond_the_file_are_refused_without_allocating(tmp_path: Path, payload: bytes, message: str) -> None:
    import tracemalloc

    file = tmp_path / "bomb.pkl"
    file.write_bytes(payload)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=message) as error:
            load_data_pickle(file)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.value.path == str(file)
    assert str(error.value).startswith(f"{file}: ") and "\n" not in str(error.value)
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


def test_a_pickle_using_its_memo_normally_still_loads(tmp_path: Path) -> None:
    shared = ["x"] * 3
    data = {"a": shared, "b": shared, "c": [shared, {"d": shared}]}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        file = tmp_path / f"p{protocol}.pkl"
        file.write_bytes(pickle.dumps(data, protocol=protocol))
        assert load_data_pickle(file) == data


@pytest.mark.parametrize("payload", [b"\x80\x02Pabc\n.", b"\x80\x02N\x51."], ids=["persid", "binpersid"])
def test_a_persistent_id_is_refused_on_one_line(tmp_path: Path, payload: bytes) -> None:
    """The stock unpickler's message spans two lines; the CLI prints one."""
    file = tmp_path / "persid.pkl"
    file.write_bytes(payload)

    with pytest.raises(InputError, match="refused a persistent id") as error:
        load_data_pickle(file)
    assert "\n" not in str(error.value) and error.value.path == str(file)


def test_an_unsupported_numpy_dtype_is_named_in_bounded_length(tmp_path: Path) -> None:
    """The dtype code comes from the file: a 100,000-character code is not copied into the message."""
    code = b"O" * 100_000
    file = tmp_path / "long_dtype.pkl"
    file.write_bytes(b"\x80\x02cnumpy\ndtype\nX" + len(code).to_bytes(4, "little") + code + b"K\x00K\x01\x87R.")

    with pytest.raises(InputError, match="numpy scalar of dtype 'OOOO") as error:
        load_data_pickle(file)
    assert len(str(error.value)) < 300


@pytest.mark.parametrize(
    "packer, said", [("gzip", "gzip-compressed"), ("bz2", "bzip2-compressed"), ("lzma", "xz-compressed"), ("zip", "a zip archive")]
)
def test_a_compressed_pickle_is_named_as_such_not_as_a_bad_opcode(tmp_path, packer: str, said: str) -> None:
    import bz2
    import gzip
    import lzma
    import pickle
    import zipfile

    from instructerc.data.safe_pickle import load_data_pickle
    from instructerc.errors import InputError

    raw = pickle.dumps({"a": [1, 2]}, protocol=2)
    path = tmp_path / "data.pkl"
    if packer == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data.pkl", raw)
    else:
        path.write_bytes({"gzip": gzip, "bz2": bz2, "lzma": lzma}[packer].compress(raw))
    with pytest.raises(InputError) as caught:
        load_data_pickle(path)
    assert str(caught.value.path) == str(path) and f"is {said}, not a pickle" in caught.value.message
    (tmp_path / "plain.pkl").write_bytes(raw)
    assert load_data_pickle(tmp_path / "plain.pkl") == {"a": [1, 2]}
