"""Reading a torch.distributed.checkpoint without running code from it.

DCP pickles two things: its ``.metadata`` file (a `Metadata` object) and each non-tensor value of the state
dict (optimizer hyper-parameters, for us), which its default planner reads back with
``torch.load(weights_only=False)``. A copied checkpoint with a crafted file could run anything on load. Here
the metadata is read by an unpickler that admits only the classes DCP writes there, and byte values with
``torch.load(weights_only=True)``; tensors DCP already reads with ``weights_only=True``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element  # what DCP's own planner uses here
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from ..errors import XmodelError

# Module → names a DCP metadata file may refer to (seen in files torch 2.11–2.13 writes; checked by a test).
_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {"Metadata", "TensorStorageMetadata", "TensorProperties",
                                              "ChunkStorageMetadata", "BytesStorageMetadata", "MetadataIndex",
                                              "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        dtype = getattr(torch, name, None) if module == "torch" else None
        if name in _METADATA_GLOBALS.get(module, ()) or isinstance(dtype, torch.dtype):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a class DCP writes in its metadata")


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` whose metadata unpickling admits only DCP's own metadata classes."""

    def __init__(self, path: str | Path):
        super().__init__(str(path))
        self._dir = Path(path)

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = self._dir / ".metadata"
        try:
            with open(path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as e:
            raise XmodelError(f"{path}: refused ({e})") from None
        if not isinstance(metadata, Metadata):
            raise XmodelError(f"{path}: not a checkpoint metadata file")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, reading the state dict's non-tensor values with ``weights_only=True``."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError:
            raise XmodelError(f"state value {read_item.dest_index.fqn} is not plain data (refused to unpickle "
                              f"it)") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj
