"""Minimal safetensors reader/writer on numpy (no pickle, no extra dependency).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian
header length, a JSON header ``{name: {dtype, shape, data_offsets}, "__metadata__":
{str: str}}`` padded with spaces to 8 bytes, then the raw little-endian data.
Files written here load with the ``safetensors`` package and vice versa.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Writes ``tensors`` (name -> numpy array) and string ``metadata`` to ``path`` atomically.

    >>> save_file({"h": np.zeros((2, 3), np.float32)}, "state.safetensors", {"turns": "1"})
    """
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {arr.dtype} cannot be stored")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)


def _fail(path, what: str) -> ValueError:
    return ValueError(f"{path}: not a valid safetensors file ({what})")


def _int_list(value, field: str, path, name: str) -> list[int]:
    # bool is an int subclass; JSON true/false is not a size.
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise _fail(path, f"{name!r}: {field} must be a list of non-negative integers, got {value!r}")
    return value


def load_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Reads a safetensors file: (name -> numpy array, metadata). Raises ValueError naming the
    offending field on a malformed file (never TypeError or OverflowError).

    >>> tensors, metadata = load_file("state.safetensors")
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise _fail(path, "too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise _fail(path, f"header length {n} past the end of the file")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _fail(path, f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _fail(path, f"header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "__metadata__ must map str to str")
    body = memoryview(raw)[8 + n :]
    tensors = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _fail(path, f"{name!r}: entry must be an object, got {type(info).__name__}")
        for field in ("dtype", "shape", "data_offsets"):
            if field not in info:
                raise _fail(path, f"{name!r}: missing field {field!r}")
        if not isinstance(info["dtype"], str) or info["dtype"] not in _DTYPES:
            raise _fail(path, f"{name!r}: dtype {info['dtype']!r} is not one of {sorted(_DTYPES)}")
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        shape = _int_list(info["shape"], "shape", path, name)
        offsets = _int_list(info["data_offsets"], "data_offsets", path, name)
        if len(offsets) != 2:
            raise _fail(path, f"{name!r}: data_offsets must be [begin, end], got {offsets!r}")
        begin, end = offsets
        count = 1
        for s in shape:  # Python ints: a huge shape cannot wrap around
            count *= s
        if not begin <= end <= len(body):
            raise _fail(path, f"{name!r}: data_offsets {offsets} outside the {len(body)}-byte data section")
        if end - begin != count * dtype.itemsize:
            raise _fail(path, f"{name!r}: data_offsets span {end - begin} bytes but shape {shape} of "
                              f"{info['dtype']} needs {count * dtype.itemsize}")
        tensors[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return tensors, metadata
