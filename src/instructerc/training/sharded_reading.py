"""Reading a sharded checkpoint (``torch.distributed.checkpoint``) without letting it run code.

A checkpoint folder is a file a user may be handed. torch reads its ``.metadata`` index with
plain ``pickle.load`` and the non-tensor values in its shards (optimizer settings) with
``torch.load(weights_only=False)``: either could call any importable function. Here the index is
read by an unpickler that builds only the checkpoint format's own classes, and those values by
``torch.load(weights_only=True)``, which builds only tensors and plain data.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

INDEX_FILE = ".metadata"
# What an index holds besides the classes of torch.distributed.checkpoint.metadata: where each
# item is stored, tensor shapes, dtypes, layouts (rebuilt by name) and the checkpoint's path.
_INDEX_GLOBALS = frozenset(
    {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch.serialization", "_get_layout"),
        ("torch", "Size"),
        ("collections", "OrderedDict"),
        ("pathlib", "Path"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "PureWindowsPath"),
    }
)


class IndexUnpickler(pickle.Unpickler):
    """Builds a checkpoint index; any other global is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _INDEX_GLOBALS:
            return getattr(importlib.import_module(module), name)
        if module == "torch.distributed.checkpoint.metadata" and isinstance(getattr(_metadata_module(), name, None), type):
            return getattr(_metadata_module(), name)
        if module == "torch" and _is_dtype(name):
            import torch

            return getattr(torch, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a checkpoint index never holds")


def _metadata_module() -> Any:
    return importlib.import_module("torch.distributed.checkpoint.metadata")


def _is_dtype(name: str) -> bool:
    import torch

    return isinstance(getattr(torch, name, None), torch.dtype)


def read_index(directory: Path) -> Metadata:
    """The index of the checkpoint in ``directory``, read as :class:`IndexUnpickler` allows."""
    with open(directory / INDEX_FILE, "rb") as handle:
        return IndexUnpickler(handle).load()


class IndexCheckingReader(FileSystemReader):
    """torch's file-system reader, with the index read by :func:`read_index`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_index(Path(self.path))
        # As FileSystemReader.read_metadata does after its own unpickling.
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class DataOnlyLoadPlanner(DefaultLoadPlanner):
    """torch's load planner, with each non-tensor value checked to be plain data first."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        import torch

        start = value.tell()
        try:
            torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(f"{read_item.dest_index.fqn}: not plain data ({str(error).splitlines()[0]})") from None
        value.seek(start)
        super().load_bytes(read_item, value)
