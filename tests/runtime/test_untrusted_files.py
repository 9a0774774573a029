"""The runtime loader treats model files as untrusted input (issue #21, class 6):
every malformed field is a ValueError naming it, never another exception, and no
allocation is sized by a number in the file instead of by the file or the input."""

import hashlib
import json
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlstm.runtime as rt
from fastlstm._ext import _C
from fastlstm.runtime import format as rt_format

pytestmark = pytest.mark.skipif(_C is None, reason="needs fastlstm._C")
RNG = np.random.default_rng(0)


def _lstm_file(path, bias=True, dtype="float32"):
    H, I = 4, 3
    tensors = {"0.l0.w_ih": RNG.standard_normal((1, 16, I)).astype(np.float32),
               "0.l0.w_hh": RNG.standard_normal((1, 16, H)).astype(np.float32)}
    if bias:
        tensors["0.l0.bias"] = RNG.standard_normal((1, 16)).astype(np.float32)
    config = {"layers": [dict(type="lstm", name="0", input_size=I, hidden_size=H, num_layers=1, bidirectional=False,
                              proj_size=0, bias=bias, batch_first=False, dtype=dtype)], "outputs": "lstm"}
    rt_format.write(path, tensors, config)
    return tensors, config


ENCODER = {"apps": ["vscode", "slack"], "max_apps": 4, "score_range": [0, 1], "duration_scale": 3600.0, "window": 16}


def _head_file(path, window=(2, 1), dtype="float32", encoder=None):
    """linear(F -> 8) then a productivity_head (E=8, 2 heads); F = 5, or the encoder's 13 features."""
    E, C, F = 8, 3, 5 if encoder is None else 13
    tensors = {"0.weight": RNG.standard_normal((E, F)).astype(np.float32), "0.bias": np.zeros(E, np.float32)}
    for sub, (n, k) in dict(in_proj=(3 * E, E), out_proj=(E, E), pattern=(C, E), forecast=(F, E), anomaly=(1, E)).items():
        tensors[f"1.{sub}.weight"] = (RNG.standard_normal((n, k)) * 0.3).astype(np.float32)
        tensors[f"1.{sub}.bias"] = np.zeros(n, np.float32)
    config = {"layers": [dict(type="linear", name="0", in_features=F, out_features=E, bias=True, dtype="float32"),
                         dict(type="productivity_head", name="1", embed_dim=E, num_heads=2,
                              window=None if window is None else list(window), global_tokens=0, output_dim=C,
                              forecast_dim=F, dtype=dtype)],
              "outputs": "tensor"}
    if encoder is not None:
        config["encoder"] = encoder
    rt_format.write(path, tensors, config)
    return tensors, config


def _raw_file(path, header: bytes, body: bytes = b""):
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)


def _rewrite(path, tensors, config):
    """Writes without the save-time validation, as a hostile producer would."""
    rt_format.write(path, tensors, config)


def _refused(path, tensors, config, match):
    _rewrite(path, tensors, config)
    with pytest.raises(ValueError, match=match):
        rt.load(path)


def test_deeply_nested_header_is_a_value_error(tmp_path):
    p = tmp_path / "deep.safetensors"
    _raw_file(p, b'{"x": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    with pytest.raises(ValueError, match="header nests"):
        rt.load(p)
    tensors, config = _lstm_file(tmp_path / "ok.safetensors")
    deep = {"a": 1}
    for _ in range(50):
        deep = {"a": deep}
    config["layers"][0]["extra"] = deep
    _refused(p, tensors, config, "config' nests")


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    p = tmp_path / "m.safetensors"
    tensors, config = _lstm_file(p)
    tensors["0.[[[[[[[[[[[[[[[[[[{{{{{{{{{{"] = np.zeros(1, np.float32)
    _refused(p, tensors, config, "not part of this layer")


@pytest.mark.parametrize("shape", [[10 ** 30], [2 ** 62, 2 ** 62], [-1], [1.5], [True], "3", [1] * 9])
def test_bad_shapes_are_value_errors_naming_the_field(tmp_path, shape):
    p = tmp_path / "m.safetensors"
    _lstm_file(p)
    blob = p.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header["0.l0.w_ih"]["shape"] = shape
    _raw_file(p, json.dumps(header).encode(), blob[8 + n:])
    with pytest.raises(ValueError, match="'shape'"):
        rt.load(p)


@pytest.mark.parametrize("layers", [[5], ["lstm"], [None], [[1]], 5, [], [{"type": 3, "name": "0"}]])
@pytest.mark.parametrize("outputs", ["lstm", "tensor"])
def test_malformed_layer_lists_are_value_errors(tmp_path, layers, outputs):
    p = tmp_path / "m.safetensors"
    _rewrite(p, {}, {"layers": layers, "outputs": outputs})
    with pytest.raises(ValueError, match="field 'layers"):
        rt.load(p)


@pytest.mark.parametrize("field,value", [("hidden_size", 10 ** 30), ("num_layers", -1), ("input_size", 0),
                                         ("proj_size", 4), ("bias", 1), ("dtype", "float16"), ("name", "a.b"),
                                         ("batch_first", None)])
def test_out_of_range_fields_name_the_field(tmp_path, field, value):
    p = tmp_path / "m.safetensors"
    tensors, config = _lstm_file(p)
    config["layers"][0][field] = value
    _rewrite(p, tensors, config)
    with pytest.raises(ValueError, match=field):
        rt.load(p)


def test_a_bias_tensor_with_bias_false_is_refused(tmp_path):
    p = tmp_path / "m.safetensors"
    tensors, config = _lstm_file(p, bias=True)
    config["layers"][0]["bias"] = False
    _refused(p, tensors, config, "not part of this layer")
    tensors, config = _head_file(p)
    config["layers"][0]["bias"] = False
    _refused(p, tensors, config, "not part of this layer")


def test_a_huge_head_window_allocates_by_the_input_not_the_file(tmp_path):
    p = tmp_path / "m.safetensors"
    _head_file(p, window=(2000000, 0))
    model = rt.load(p)
    x = RNG.standard_normal((10, 5)).astype(np.float32)
    tracemalloc.start()
    pattern, forecast, anomaly, weights = model(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes for T=10"
    assert weights.shape == (10, 10)  # the window clamped to T - 1 = 9 on the left, 0 on the right
    # and it equals the same model with the window written as [9, 0]
    _head_file(tmp_path / "w9.safetensors", window=(9, 0))
    small = rt.load(tmp_path / "w9.safetensors")
    small.layers[0].weight_t[:] = model.layers[0].weight_t
    for sub in small.layers[1].linears:
        small.layers[1].linears[sub] = model.layers[1].linears[sub]
    small.layers[1].__dict__.update({k: v for k, v in vars(model.layers[1]).items() if k.startswith("_")})
    for a, b in zip(small(x), (pattern, forecast, anomaly, weights)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("window", [None, (2, 1)])
def test_batch_of_zero_returns_four_empty_outputs(tmp_path, window):
    p = tmp_path / "m.safetensors"
    _head_file(p, window=window)
    out = rt.load(p)(np.zeros((0, 6, 5), np.float32))
    assert len(out) == 4
    span = 6 if window is None else 4
    assert [o.shape for o in out] == [(0, 6, 3), (0, 5), (0, 6, 1), (0, 6, span)]
    p2 = tmp_path / "l.safetensors"
    _lstm_file(p2)
    y, (h, c) = rt.load(p2)(np.zeros((7, 0, 3), np.float32))
    assert y.shape == (7, 0, 4) and h.shape == (1, 0, 4) and c.shape == (1, 0, 4)


def test_lengths_are_checked(tmp_path):
    p = tmp_path / "l.safetensors"
    _lstm_file(p)
    m = rt.load(p)
    x = np.zeros((5, 2, 3), np.float32)
    for bad in (np.array([6, 1]), np.array([0, 1]), np.array([1.0, 2.0]), np.array([1])):
        with pytest.raises(ValueError, match="lengths"):
            m(x, lengths=bad)


@pytest.mark.parametrize("field,value", [("apps", ["a", "a"]), ("apps", [""]), ("apps", "ab"), ("max_apps", 1),
                                         ("score_range", [1, 0]), ("score_range", [0, "1"]), ("duration_scale", 0),
                                         ("window", 0), ("window", True), ("extra", 1)])
def test_encoder_fields_are_checked(tmp_path, field, value):
    p = tmp_path / "m.safetensors"
    tensors, config = _head_file(p, encoder=ENCODER)
    assert rt.load(p).encoder.apps == ["vscode", "slack"]
    config["encoder"] = dict(ENCODER, **{field: value})
    _refused(p, tensors, config, "encoder" + ("" if field == "extra" else f".{field}"))


def test_many_layers_load_and_too_many_are_refused(tmp_path):
    """Tensors are grouped by layer in one pass (was a scan per layer: 4x layers, 15x time)."""
    def chain(n):
        tensors, layers = {}, []
        for i in range(n):
            layers.append(dict(type="linear", name=str(i), in_features=4, out_features=4, bias=False, dtype="float32"))
            tensors[f"{i}.weight"] = np.eye(4, dtype=np.float32)
        return tensors, {"layers": layers, "outputs": "tensor"}
    p = tmp_path / "m.safetensors"
    _rewrite(p, *chain(64))
    np.testing.assert_array_equal(rt.load(p)(np.ones((2, 4), np.float32)), np.ones((2, 4)))
    _rewrite(p, *chain(65))
    with pytest.raises(ValueError, match="1 to 64 layers"):
        rt.load(p)


def test_non_finite_weights_and_duplicate_keys_are_refused(tmp_path):
    p = tmp_path / "m.safetensors"
    tensors, config = _lstm_file(p)
    tensors["0.l0.w_hh"][0, 0, 0] = np.nan
    _refused(p, tensors, config, "NaN")
    _raw_file(p, b'{"a": 1, "a": 2}')
    with pytest.raises(ValueError, match="duplicate key"):
        rt.load(p)


# -- fuzzing: mutate a valid file's header and body --------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    if not path:
        return value
    obj[path[0]] = _set(obj[path[0]], path[1:], value)
    return obj


def _assert_value_error_or_valid(p, x):
    try:
        model = rt.load(p)
    except ValueError:
        return
    try:
        out = model(x)
    except ValueError:  # e.g. a mutated input width: the input no longer fits
        return
    assert out is not None


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("valid")
    files = []
    p = d / "app.safetensors"
    _head_file(p, encoder=ENCODER)
    files.append((rt_format.read(p), np.ones((4, 13), np.float32)))
    for name, make in (("lstm", _lstm_file), ("head", _head_file), ("lstm8", lambda p: _lstm_file(p, dtype="int8"))):
        p = d / f"{name}.safetensors"
        if name == "lstm8":
            w = {"0.l0.w_ih": RNG.integers(-127, 128, (1, 16, 3)).astype(np.int8),
                 "0.l0.w_hh": RNG.integers(-127, 128, (1, 16, 4)).astype(np.int8),
                 "0.l0.w_ih_scale": np.full((1, 16), 0.01, np.float32),
                 "0.l0.w_hh_scale": np.full((1, 16), 0.01, np.float32), "0.l0.bias": np.zeros((1, 16), np.float32)}
            config = {"layers": [dict(type="lstm", name="0", input_size=3, hidden_size=4, num_layers=1,
                                      bidirectional=False, proj_size=0, bias=True, batch_first=False, dtype="int8")],
                      "outputs": "lstm"}
            rt_format.write(p, w, config)
            files.append((rt_format.read(p), np.ones((4, 1, 3), np.float32)))
        else:
            make(p)
            files.append((rt_format.read(p), np.ones((4, 1, 3), np.float32) if name == "lstm"
                          else np.ones((4, 5), np.float32)))
    return files


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_header_and_config_mutations(tmp_path, valid_files, data):
    (tensors, config), x = data.draw(st.sampled_from(valid_files))
    p = tmp_path / "fuzz.safetensors"
    config = json.loads(json.dumps(config))
    header = {k: {"dtype": rt_format._CODES[v.dtype], "shape": list(v.shape)} for k, v in tensors.items()}
    doc = {"config": config, "header": header}
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    doc = _set(doc, path, data.draw(JSON_VALUES))
    if path[0] == "config":
        rt_format.write(p, tensors, doc["config"])
    else:  # a mutated tensor entry: patch the header write() made, keeping its offsets
        rt_format.write(p, tensors, config)
        blob = p.read_bytes()
        n = struct.unpack("<Q", blob[:8])[0]
        raw = json.loads(blob[8:8 + n])
        for name, entry in (doc["header"].items() if isinstance(doc["header"], dict) else []):
            if name in raw:
                raw[name] = dict(raw[name], **entry) if isinstance(entry, dict) else entry
        _raw_file(p, json.dumps(raw).encode(), blob[8 + n:])
    _assert_value_error_or_valid(p, x)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_raw_bytes(tmp_path, valid_files, data):
    """Byte flips anywhere; in the body with the checksum rewritten so the flip is loaded."""
    (tensors, config), x = data.draw(st.sampled_from(valid_files))
    p = tmp_path / "fuzz.safetensors"
    rt_format.write(p, tensors, config)
    blob = bytearray(p.read_bytes())
    n = struct.unpack("<Q", blob[:8])[0]
    in_body = data.draw(st.booleans())
    lo, hi = (8 + n, len(blob)) if in_body else (0, 8 + n)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(lo, hi - 1))
        blob[i] = data.draw(st.integers(0, 255))
    if in_body:
        header = json.loads(bytes(blob[8:8 + n]))
        header["__metadata__"]["sha256"] = hashlib.sha256(bytes(blob[8 + n:])).hexdigest()
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (n - len(raw))
        blob[8:8 + n] = raw
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob) - 1)):]  # and truncate
    p.write_bytes(bytes(blob))
    _assert_value_error_or_valid(p, x)
