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
import re
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


_MAX_DEPTH = 8  # the header nests 3 deep, a config 4; anything deeper is not ours
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _fail(path, why: str):
    raise ValueError(f"{os.fspath(path)}: not a valid fastlstm runtime file ({why})")


def _nesting_depth(raw: bytes) -> int:
    """Deepest ``[``/``{`` nesting of JSON text, outside strings, in one linear pass
    (so a hostile header is refused before ``json.loads`` could recurse on it)."""
    if not raw:
        return 0
    code = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    step = np.zeros(code.shape, np.int64)
    step[(code == ord("[")) | (code == ord("{"))] = 1
    step[(code == ord("]")) | (code == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name):
    raise ValueError(f"non-finite number {name}")


def parse_json(text: str | bytes, what: str, path) -> object:
    """JSON from an untrusted file: bounded nesting, no duplicate keys, no NaN/Infinity;
    every failure a ValueError naming ``what``."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    depth = _nesting_depth(raw)
    if depth > _MAX_DEPTH:
        _fail(path, f"{what} nests {depth} levels deep, at most {_MAX_DEPTH} allowed")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _fail(path, f"{what} is not valid JSON: {exc}")


def _plain_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(path, name: str, info, body_len: int) -> tuple[np.dtype, tuple, int, int]:
    """Validated ``(dtype, shape, begin, end)`` of one header entry."""
    where = f"tensor {name!r}"
    if not isinstance(info, dict) or set(info) != _ENTRY_KEYS:
        _fail(path, f"{where}: entry must be an object with exactly {sorted(_ENTRY_KEYS)}")
    if not isinstance(info["dtype"], str) or info["dtype"] not in _DTYPES:
        _fail(path, f"{where}: field 'dtype' {info['dtype']!r} is not one of {sorted(_DTYPES)}")
    dtype = np.dtype(_DTYPES[info["dtype"]])
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or len(shape) > 8 or not all(_plain_int(s) and s >= 0 for s in shape):
        _fail(path, f"{where}: field 'shape' must be a list of at most 8 ints >= 0, got {shape!r}"[:300])
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_plain_int(v) for v in offsets):
        _fail(path, f"{where}: field 'data_offsets' must be [begin, end] ints, got {offsets!r}"[:300])
    begin, end = offsets
    if not 0 <= begin <= end <= body_len:
        _fail(path, f"{where}: field 'data_offsets' {offsets} lies outside the {body_len}-byte data")
    numel = 1
    for s in shape:  # Python ints: no overflow; stop as soon as it exceeds the data
        numel *= s
        if numel * dtype.itemsize > body_len:
            break
    if numel * dtype.itemsize != end - begin:
        _fail(path, f"{where}: field 'shape' {shape} does not match its {end - begin} bytes"[:300])
    return dtype, tuple(shape), begin, end


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Reads a file written by :func:`write`; returns ``(tensors, config)``.

    The file is untrusted input: every field is checked (types, ranges, offsets,
    nesting depth, a checksum) and every failure raises ValueError naming it; the
    work is linear in the file's size.

    >>> tensors, config = read("model.safetensors")
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        _fail(path, f"{len(blob)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n < 2 or n > _MAX_HEADER or 8 + n > len(blob):
        _fail(path, f"header length {n} does not fit a {len(blob)}-byte file")
    header = parse_json(blob[8 : 8 + n], "header", path)
    if not isinstance(header, dict):
        _fail(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        _fail(path, "field '__metadata__' does not name the fastlstm-runtime format")
    if set(meta) != {"format", "version", "config", "sha256"} or not all(isinstance(v, str) for v in meta.values()):
        _fail(path, f"field '__metadata__' must hold exactly format, version, config, sha256 as strings")
    if meta["version"] != FORMAT_VERSION:
        _fail(path, f"format version {meta['version']!r}, this fastlstm reads {FORMAT_VERSION!r}")
    body = memoryview(blob)[8 + n :]
    if hashlib.sha256(body).hexdigest() != meta["sha256"]:
        _fail(path, "tensor data checksum mismatch (truncated or corrupted)")
    config = parse_json(meta["config"], "field 'config'", path)
    if not isinstance(config, dict):
        _fail(path, "field 'config' is not a JSON object")
    entries = sorted(((_entry(path, name, info, len(body)), name) for name, info in header.items()),
                     key=lambda item: (item[0][2], item[0][3]))
    pos = 0
    tensors = {}
    for (dtype, shape, begin, end), name in entries:
        if begin != pos:
            _fail(path, f"tensor {name!r}: tensor data has gaps or overlaps")
        pos = end
        arr = np.frombuffer(body[begin:end], dtype=dtype.newbyteorder("<")).reshape(shape).astype(dtype)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            _fail(path, f"tensor {name!r} contains NaN or infinity")
        tensors[name] = arr
    if pos != len(body):
        _fail(path, "tensor data does not end where the file does")
    return tensors, config
