"""Reading and writing the runtime's one-file format: safetensors, by hand.

Layout: 8-byte little-endian header length N, N bytes of JSON header
(``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``),
then the tensor bytes. fastlstm adds ``format``, ``version``, ``config`` (a
JSON string) and ``sha256`` (of the tensor bytes) to the metadata so that a
corrupted or truncated file raises :class:`ValueError` instead of loading
wrong weights. numpy only; no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

FORMAT_NAME = "fastlstm-runtime"
FORMAT_VERSION = "1"

_DTYPES = {"F32": np.float32, "F64": np.float64, "I8": np.int8, "U8": np.uint8, "I32": np.int32, "I64": np.int64}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], config: dict) -> None:
    """Writes ``tensors`` and the JSON-serialisable ``config`` to one safetensors file.

    >>> write("model.safetensors", {"w": np.zeros((4, 3), np.float32)}, {"layers": []})
    """
    header: dict = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _CODES:
            raise TypeError(f"export: tensor {name!r} has unsupported dtype {arr.dtype}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    body = b"".join(chunks)
    header["__metadata__"] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": json.dumps(config, sort_keys=True),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # tensor data starts 8-byte aligned, as safetensors writes it
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.write(body)
    os.replace(tmp, path)


def _fail(path, why: str):
    raise ValueError(f"{os.fspath(path)}: not a valid fastlstm runtime file ({why})")


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Reads a file written by :func:`write`; returns ``(tensors, config)``.

    Raises ValueError naming the problem for a truncated, corrupted or foreign file.

    >>> tensors, config = read("model.safetensors")
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        _fail(path, f"{len(blob)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n < 2 or n > _MAX_HEADER or 8 + n > len(blob):
        _fail(path, f"header length {n} does not fit a {len(blob)}-byte file")
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"header is not JSON: {exc}")
    if not isinstance(header, dict):
        _fail(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        _fail(path, "metadata does not name the fastlstm-runtime format")
    if meta.get("version") != FORMAT_VERSION:
        _fail(path, f"format version {meta.get('version')!r}, this fastlstm reads {FORMAT_VERSION!r}")
    body = memoryview(blob)[8 + n :]
    if hashlib.sha256(body).hexdigest() != meta.get("sha256"):
        _fail(path, "tensor data checksum mismatch (truncated or corrupted)")
    try:
        config = json.loads(meta["config"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        _fail(path, f"config is missing or not JSON: {exc}")
    if not isinstance(config, dict):
        _fail(path, "config is not a JSON object")
    tensors = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            _fail(path, f"tensor {name!r} has a malformed entry: {exc!r}")
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(body):
            _fail(path, f"tensor {name!r} lies outside the data")
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != end - begin:
            _fail(path, f"tensor {name!r}: shape {list(shape)} does not match its {end - begin} bytes")
        spans.append((begin, end))
        tensors[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            _fail(path, "tensor data has gaps or overlaps")
        pos = end
    if pos != len(body):
        _fail(path, "tensor data does not end where the file does")
    return tensors, config
