"""Read a legacy (pre-1.6, non-zip) PyTorch checkpoint into numpy arrays, without torch.

The format is five pickles followed by raw storages: a magic number, the protocol version, system
info, the object itself (an OrderedDict of tensors whose storages are pickled as persistent ids),
and the list of storage keys in the order their bytes follow; each storage is then an int64
element count and the raw little-endian elements.

A pickle can run arbitrary code, and a .pth file from a package is untrusted input: the unpickler
resolves only the handful of names a state dict needs (an allow-list) and refuses everything
else. numpy does the rest.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """The file is not a legacy torch checkpoint we can read, or it asks for a forbidden name."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype[Any]
    offset: int  # elements into the root storage (views)


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _StorageRef, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed names; storages come back as references, not bytes."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, _numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unexpected storage type {storage_type!r:.80}")
        offset = 0
        if view is not None:  # (view_key, offset, size): a slice of the root storage
            offset = int(view[1])
        return _StorageRef(str(key), storage_type.dtype, offset)


def _load_pickle(stream: BinaryIO) -> Any:
    return _RestrictedUnpickler(stream).load()


def read_legacy_checkpoint(path: Path | str) -> dict[str, np.ndarray]:
    """name -> array (C-contiguous, the tensor's own dtype) of every tensor in the state dict."""
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    try:
        magic = _load_pickle(stream)
        if magic != LEGACY_MAGIC:
            raise CheckpointError(
                f"{path} is not a legacy torch checkpoint (zip-format files are not read here)"
            )
        if _load_pickle(stream) != LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unsupported torch protocol version")
        _load_pickle(stream)  # system info: byte order and C type sizes of the saving machine
        state = _load_pickle(stream)
        keys = _load_pickle(stream)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise CheckpointError(f"{path} does not hold a state dict")

    # Storage bytes follow the pickles in `keys` order; dtypes come from the tensors that use them.
    dtypes = {ref.storage.key: ref.storage.dtype for ref in state.values() if isinstance(ref, _TensorRef)}
    storages: dict[str, np.ndarray] = {}
    position = stream.tell()
    for key in keys:
        if key not in dtypes:
            raise CheckpointError(f"{path}: storage {key} is used by no tensor")
        (count,) = struct.unpack_from("<q", data, position)
        position += 8
        size = count * dtypes[key].itemsize
        if count < 0 or position + size > len(data):
            raise CheckpointError(f"{path} is truncated (storage {key})")
        storages[key] = np.frombuffer(data, dtype=dtypes[key], count=count, offset=position)
        position += size

    arrays: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is not a tensor")
        arrays[str(name)] = _materialize(storages, ref, str(path), str(name))
    return arrays


def _materialize(storages: dict[str, np.ndarray], ref: _TensorRef, path: str, name: str) -> np.ndarray:
    try:
        base = storages[ref.storage.key]
    except KeyError:
        raise CheckpointError(f"{path}: tensor {name} uses a storage that is not in the file") from None
    start = ref.storage.offset + ref.offset
    if not ref.shape:
        return np.array(base[start])
    last = start + sum((size - 1) * stride for size, stride in zip(ref.shape, ref.stride, strict=True))
    if min(ref.stride) < 0 or last >= base.size:
        raise CheckpointError(f"{path}: tensor {name} lies outside its storage")
    itemsize = base.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[start:],
        shape=ref.shape,
        strides=tuple(stride * itemsize for stride in ref.stride),
        writeable=False,
    )
    return np.ascontiguousarray(view)
