"""fastlstm.models.chat: tokenizer, encoder/decoder parity with torch.nn.LSTM builds,
generation limits, sessions, short- and long-term memory, training recipe."""

import random
import threading

import numpy as np
import pytest
import torch

from fastlstm.models import (
    ByteTokenizer,
    LSTMEncoder,
    MemoryIndex,
    Seq2SeqLSTM,
    SessionState,
    SessionStore,
    ShortTermMemory,
)
from fastlstm.models.chat import LTM_SIMILARITY_THRESHOLD, LTM_TOP_K, STM_MAX_MESSAGES, STM_MAX_TOKENS
from fastlstm.models.chat.safetensors_io import load_file, save_file
from fastlstm.models.chat.training import TrainConfig, corrupt, synthetic_corpus, train
from fastlstm.testing import assert_parity

TOK = ByteTokenizer()
SMALL = dict(embed_dim=16, encoder_hidden=16, decoder_hidden=24, encoder_layers=2, decoder_layers=2, dim=12)


def _pair(**kw):
    torch.manual_seed(1)
    fast = Seq2SeqLSTM(**{**SMALL, **kw}).eval()
    ref = Seq2SeqLSTM(**{**SMALL, **kw}, lstm_cls=torch.nn.LSTM).eval()
    ref.load_state_dict(fast.state_dict())
    return fast, ref


# -- tokenizer ---------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "hello", "héllo wörld", "日本語のテキスト", "emoji 🙂👍🏽", "tab\tnew\nline\x00nul",
                                  "escaped \udcff\udc80 bytes", "lone \ud800 and \udbff surrogates"],
                         ids=["empty", "ascii", "latin", "cjk", "emoji", "control", "escapes", "lone-surrogates"])
def test_tokenizer_round_trip_text(text):
    ids = TOK.encode(text, bos=True, eos=True)
    assert ids[0] == TOK.BOS and ids[-1] == TOK.EOS
    assert all(0 <= i < TOK.vocab_size for i in ids)
    assert TOK.decode(ids) == text


def test_tokenizer_invalid_utf8_is_lossless():
    rng = random.Random(0)
    samples = [b"\xff\xfe\xc3(", b"\xed\xa0\x80", b"ok\x80\x81", b"\xf0\x9f\x99"]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(300)]
    for raw in samples:
        ids = TOK.encode(raw)
        assert ids == list(raw)
        assert TOK.decode_bytes(ids) == raw
        assert TOK.to_bytes(TOK.decode(ids)) == raw  # via str and back


def test_tokenizer_batch_and_pack():
    ids, lengths = TOK.batch(["ab", "", "abcd"], eos=True)
    assert ids.shape == (3, 5) and lengths.tolist() == [3, 1, 5]
    assert ids[1, 0] == TOK.EOS and (ids[0, 3:] == TOK.PAD).all()
    assert TOK.batch([""])[0].tolist() == [[TOK.SEP]]  # an empty text still has one token
    packed = TOK.pack(["ab", "abcd"])
    assert packed.data.numel() == 6
    assert TOK.encode("abcdef", max_length=3) == list(b"abc")
    with pytest.raises(TypeError):
        TOK.batch("not a list")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TOK.decode([300])
    assert TOK.decode([104, 105, TOK.EOS, 106]) == "hi"  # stops at eos


@pytest.mark.parametrize("bos,eos,max_length", [(False, False, None), (True, False, 3), (False, True, None),
                                                 (True, True, 0), (True, True, 2)])
def test_tokenizer_batch_matches_encode(bos, eos, max_length):
    texts = ["ab", "", "abcdé", b"\xff\xfe raw"]
    ids, lengths = TOK.batch(texts, bos=bos, eos=eos, max_length=max_length)
    rows = [TOK.encode(t, bos=bos, eos=eos, max_length=max_length) or [TOK.SEP] for t in texts]
    assert lengths.tolist() == [len(r) for r in rows] and ids.dtype == torch.int64
    for row, want in zip(ids.tolist(), rows):
        assert row == want + [TOK.PAD] * (ids.shape[1] - len(want))
    with pytest.raises(ValueError, match="max_length"):
        TOK.batch(["a"], max_length=-1)


# -- encoder -----------------------------------------------------------------

def test_encoder_shape_normalisation_and_order():
    torch.manual_seed(0)
    enc = LSTMEncoder(embed_dim=8, hidden_size=10, dim=6).eval()
    texts = ["a", "a much longer text than the others", "mid length", "x" * 40]
    vecs = enc.encode(texts, batch_size=3)
    assert vecs.shape == (4, 6) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    # Batching and sorting by length do not change any text's vector.
    single = np.concatenate([enc.encode([t]) for t in texts])
    np.testing.assert_allclose(vecs, single, atol=1e-5)
    assert enc.encode([]).shape == (0, 6)


def test_encoder_parity_with_torch_build():
    fast, ref = _pair()
    texts = ["short", "a somewhat longer sentence", "ünïcödé", "x" * 90]
    with torch.no_grad():
        ids, lengths = TOK.batch(texts)
        for a, b in zip(fast.encoder(ids, lengths), ref.encoder(ids, lengths)):
            assert_parity(a, b, torch.float32)
    np.testing.assert_allclose(fast.encoder.encode(texts), ref.encoder.encode(texts), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_folded_gates_match_the_op_path_and_torch(layers):
    """Inference folds the embedding into layer 0's input gates; with gradients on (and on the
    torch build) the plain path runs: all three agree, and an update of the weights is seen."""
    torch.manual_seed(1)
    fast = LSTMEncoder(embed_dim=8, hidden_size=12, num_layers=layers, dim=6).eval()
    ref = LSTMEncoder(embed_dim=8, hidden_size=12, num_layers=layers, dim=6, lstm_cls=torch.nn.LSTM).eval()
    ref.load_state_dict(fast.state_dict())
    ids, lengths = TOK.batch(["one", "a longer text", "x" * 30])
    with torch.no_grad():
        folded = fast(ids, lengths)
    plain = fast(ids, lengths)  # grad enabled: embedding + lstm op
    with torch.no_grad():
        twin = ref(ids, lengths)
    for a, b, c in zip(folded, plain, twin):
        assert_parity(a, b.detach(), torch.float32)
        assert_parity(a, c, torch.float32)
    with torch.no_grad():
        fast.embedding.weight.mul_(2.0)
        ref.embedding.weight.mul_(2.0)
        assert_parity(fast(ids, lengths)[0], ref(ids, lengths)[0], torch.float32)


# -- decoder and generation --------------------------------------------------

def test_decoder_parity_with_torch_build_teacher_forced():
    fast, ref = _pair()
    src, tgt = ["where is Alice", "hi"], ["in Lisbon", "hello there"]
    with torch.no_grad():
        results = []
        for m in (fast, ref):
            _, memory, pooled, lengths = m.encode_batch(src)
            tokens, _ = TOK.batch(tgt, bos=True)
            logits, (h, c) = m.decoder(tokens, m.initial_state(pooled), memory, lengths)
            results.append((logits, h, c))
        for a, b in zip(*results):
            assert_parity(a, b, torch.float32)
        assert_parity(fast.loss(src, tgt), ref.loss(src, tgt), torch.float32)
        # The generation step (attention half precomputed) is the teacher-forced math.
        _, memory, pooled, lengths = fast.encode_batch(src)
        state = fast.initial_state(pooled)
        tokens = torch.tensor([TOK.BOS, ord("x")])
        full, (h1, _) = fast.decoder(tokens.unsqueeze(1), state, memory, lengths)
        step, (h2, _) = fast.decoder.step(tokens, state, fast.decoder.step_memory(memory, lengths))
        assert_parity(step, full[:, 0], torch.float32)
        assert_parity(h2, h1, torch.float32)


def test_generation_parity_fused_module_and_torch():
    fast, ref = _pair()
    src = ["hello", "a second, longer source text"]
    a, (ha, ca) = fast.generate_ids(src, max_length=12, fused=True)
    b, (hb, cb) = fast.generate_ids(src, max_length=12, fused=False)
    c, (hc, cc) = ref.generate_ids(src, max_length=12)
    assert a == b == c
    for x, y in ((ha, hc), (ca, cc), (hb, hc)):
        assert_parity(x, y, torch.float32)
    beams_fast = fast.beam_search("hello", beam_size=3, max_length=6)
    beams_ref = ref.beam_search("hello", beam_size=3, max_length=6)
    assert [q for q, _ in beams_fast] == [q for q, _ in beams_ref]
    assert [s for _, s in beams_fast] == pytest.approx([s for _, s in beams_ref], abs=1e-5)


def _force(model, token):
    with torch.no_grad():
        model.decoder.out.weight.zero_()
        model.decoder.out.bias.fill_(-10.0)
        model.decoder.out.bias[token] = 10.0


def test_generation_stops_at_eos():
    fast, _ = _pair()
    _force(fast, TOK.EOS)
    ids, _ = fast.generate_ids(["anything", "else"], max_length=20)
    assert ids == [[TOK.EOS], [TOK.EOS]]
    assert fast.generate(["anything"]) == [""]
    beams = fast.beam_search("anything", beam_size=2, max_length=20)
    assert beams[0][0] == [TOK.EOS]


def test_generation_stops_at_max_length():
    fast, _ = _pair()
    _force(fast, ord("a"))
    ids, _ = fast.generate_ids(["x"], max_length=7)
    assert ids == [[ord("a")] * 7]
    assert fast.generate(["x"], max_length=3) == ["aaa"]
    beams = fast.beam_search("x", beam_size=2, max_length=5)
    assert all(len(q) == 5 for q, _ in beams)
    with pytest.raises(ValueError):
        fast.generate_ids(["x"], max_length=0)


def test_mixed_eos_keeps_each_sequences_state():
    fast, _ = _pair()
    ids, (h, c) = fast.generate_ids(["one", "two"], max_length=5)
    for row, src in enumerate(["one", "two"]):
        _, (h1, c1) = fast.generate_ids([src], max_length=5)
        assert_parity(h[:, row : row + 1], h1, torch.float32)


# -- sessions ----------------------------------------------------------------

def test_sessions_isolated_and_carried():
    fast, _ = _pair()
    store = SessionStore()
    store.reconstruct(fast, "alice", "hello", max_length=4)
    h_alice = store.get("alice").h.clone()
    store.reconstruct(fast, "bob", "something else entirely", max_length=4)
    assert torch.equal(store.get("alice").h, h_alice)  # bob's turn left alice alone
    assert store.get("alice").turns == 1 and store.get("bob").turns == 1
    # The carried state changes the next turn's state.
    store.reconstruct(fast, "alice", "hello", max_length=4)
    fresh = SessionStore()
    fresh.reconstruct(fast, "x", "hello", max_length=4)
    assert store.get("alice").turns == 2
    assert not torch.allclose(store.get("alice").h, fresh.get("x").h)


def test_sessions_concurrent_match_sequential():
    fast, _ = _pair()
    texts = {f"user{i}": f"message number {i}" for i in range(6)}
    sequential = SessionStore()
    for sid, text in texts.items():
        sequential.reconstruct(fast, sid, text, max_length=3)
    concurrent = SessionStore()
    threads = [threading.Thread(target=concurrent.reconstruct, args=(fast, sid, text), kwargs=dict(max_length=3))
               for sid, text in texts.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sid in texts:
        torch.testing.assert_close(concurrent.get(sid).h, sequential.get(sid).h)


def test_session_persistence(tmp_path):
    fast, _ = _pair()
    store = SessionStore()
    store.reconstruct(fast, "alice", "hi", max_length=3)
    store.reconstruct(fast, "bob/with:odd id", "hey", max_length=3)
    store.get("empty")
    store.save(tmp_path / "sessions.safetensors")
    loaded = SessionStore.load(tmp_path / "sessions.safetensors")
    assert len(loaded) == 3 and loaded.get("empty").h is None
    for sid in ("alice", "bob/with:odd id"):
        assert torch.equal(loaded.get(sid).h, store.get(sid).h)
        assert torch.equal(loaded.get(sid).c, store.get(sid).c)
        assert loaded.get(sid).turns == 1
    single = store.get("alice")
    single.save(tmp_path / "alice.safetensors")
    back = SessionState.load(tmp_path / "alice.safetensors")
    assert back.session_id == "alice" and torch.equal(back.h, single.h)
    assert b"pickle" not in (tmp_path / "alice.safetensors").read_bytes()
    with pytest.raises(ValueError):
        single.update((torch.zeros(2, 2, 3), torch.zeros(2, 2, 3)))  # batch of 2 is not one session


def test_safetensors_files_interoperate(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    save_file(arrays, tmp_path / "ours.safetensors", {"k": "v"})
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    for k in arrays:
        np.testing.assert_array_equal(theirs[k], arrays[k])
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    back, meta = load_file(tmp_path / "theirs.safetensors")
    assert meta == {"k": "v"} and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(ValueError):
        load_file(tmp_path / "bad.safetensors")


def _raw_safetensors(header) -> bytes:
    head = header if isinstance(header, bytes) else __import__("json").dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + bytes(16)


@pytest.mark.parametrize("header,field", [
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"{", "not JSON"),
    ({"__metadata__": {"k": 1}}, "__metadata__"),
    ({"__metadata__": [1]}, "__metadata__"),
    ({"x": [1]}, "'x': entry"),
    ({"x": {"dtype": "F32", "shape": [1]}}, "data_offsets"),
    ({"x": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, "dtype"),
    ({"x": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}, "dtype"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}}, "data_offsets"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}, "data_offsets"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [True, 4]}}, "data_offsets"),
    ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "shape"),
    ({"x": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}}, "shape"),
    ({"x": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, "shape"),
    ({"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, "data_offsets span"),
    ({"x": {"dtype": "F32", "shape": [2**70], "data_offsets": [0, 4]}}, "data_offsets span"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, "outside"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2**70]}}, "outside"),
], ids=lambda v: str(v)[:40])
def test_safetensors_malformed_header_raises_value_error_naming_the_field(tmp_path, header, field):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_raw_safetensors(header))
    with pytest.raises(ValueError, match=field):
        load_file(path)


def test_safetensors_truncated_and_oversized_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="too short"):
        load_file(path)
    path.write_bytes((2**63).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="past the end"):
        load_file(path)


# -- short-term memory -------------------------------------------------------

def test_stm_defaults_message_limit_and_text_summary():
    assert (STM_MAX_MESSAGES, STM_MAX_TOKENS) == (15, 500)
    stm = ShortTermMemory()
    for i in range(20):
        stm.add("user", f"Message {i} is about topic{i % 3}.")
    assert len(stm.messages) == 15 and stm.messages[0].text.startswith("Message 5 ")
    assert stm.summarized == 5
    lines = stm.summary.splitlines()
    assert lines[0] == "Summary of earlier messages:"
    assert all(line.startswith("- user: Message ") for line in lines[1:]) and len(lines) > 1
    assert stm.count_tokens(stm.summary) <= stm.summary_max_tokens == 250
    assert stm.context().startswith(stm.summary + "\nuser: Message 5 ")


def test_stm_token_budget():
    stm = ShortTermMemory(max_tokens=50)
    for i in range(6):
        stm.add("assistant", "a" * 19)  # 20 tokens each
    assert stm.tokens <= 50 and len(stm.messages) == 2 and stm.summarized == 4
    stm.add("user", "b" * 200)  # alone over budget: kept, everything older summarised
    assert len(stm.messages) == 1 and stm.summarized == 6
    assert stm.context().endswith("user: " + "b" * 200)
    plain = ShortTermMemory(max_messages=2, summariser=None)
    for t in "xyz":
        plain.add("user", t)
    assert [m.text for m in plain.messages] == ["y", "z"] and plain.summary == ""


# -- long-term memory --------------------------------------------------------

def _unit(*v):
    v = np.array(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_memory_index_top_k_and_threshold(tmp_path):
    assert LTM_TOP_K == 5 and MemoryIndex(dim=2).threshold == LTM_SIMILARITY_THRESHOLD
    index = MemoryIndex(dim=2, threshold=0.7)
    angles = np.deg2rad([0, 10, 20, 30, 40, 44, 46, 60, 90, 180])
    ids = index.add(np.stack([np.cos(angles), np.sin(angles)], 1) * 3.0, [{"deg": int(d)} for d in np.rad2deg(angles).round()])
    assert ids == list(range(10)) and index.vectors.dtype == np.float32
    hits = index.search(_unit(1, 0))
    assert [h.metadata["deg"] for h in hits] == [0, 10, 20, 30, 40]  # top-5, best first
    assert hits[0].score == pytest.approx(1.0)
    assert [h.metadata["deg"] for h in index.search(_unit(1, 0), top_k=10)] == [0, 10, 20, 30, 40, 44]  # cos 46° < 0.7
    assert index.search(_unit(0, -1)) == []
    assert len(index.search(_unit(1, 0), threshold=-1.0, top_k=100)) == 10
    index.save(tmp_path / "ltm.safetensors")
    loaded = MemoryIndex.load(tmp_path / "ltm.safetensors")
    assert loaded.metadata == index.metadata and np.array_equal(loaded.vectors, index.vectors)
    assert [h.id for h in loaded.search(_unit(1, 0.2))] == [h.id for h in index.search(_unit(1, 0.2))]
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        index.add(np.ones((1, 3)))
    with pytest.raises(ValueError):
        index.add(np.ones((2, 2)), [{}])


def test_memory_index_empty_and_ties():
    index = MemoryIndex(dim=3, top_k=2, threshold=0.0)
    assert index.search(_unit(1, 0, 0)) == []
    index.add(np.stack([_unit(1, 1, 0), _unit(1, 1, 0), _unit(1, 1, 0)]))
    assert [h.id for h in index.search(_unit(1, 0, 0))] == [0, 1]


# -- training ----------------------------------------------------------------

def test_synthetic_corpus_is_seeded():
    a, b = synthetic_corpus(5, seed=3), synthetic_corpus(5, seed=3)
    assert a == b and a != synthetic_corpus(5, seed=4)
    for conv in a:
        person = next(p for p in __import__("fastlstm.models.chat.training", fromlist=["PEOPLE"]).PEOPLE if p in conv[0])
        assert all(person in turn for turn in conv)
    assert corrupt("hello world", random.Random(0)) != ""


def test_training_reduces_losses():
    torch.manual_seed(0)
    model = Seq2SeqLSTM(**SMALL)
    history = train(model, synthetic_corpus(40, seed=0), TrainConfig(steps=12, batch_size=6, lr=1e-2, max_length=48))
    assert len(history.reconstruction) == 12 and not model.training
    assert np.mean(history.reconstruction[-5:]) < np.mean(history.reconstruction[:5])
    assert all(np.isfinite(history.contrastive))


def test_memory_index_is_consistent_under_concurrent_adds_and_searches():
    index = MemoryIndex(dim=8, top_k=3, threshold=-1.0)
    rng = np.random.default_rng(0)
    errors = []

    def writer(w):
        for i in range(200):
            index.add(rng.standard_normal((1, 8)), [{"writer": w, "i": i}])

    def reader():
        try:
            for _ in range(400):
                for hit in index.search(np.ones(8)):
                    assert hit.metadata and 0 <= hit.id < len(index)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(index) == 400 and len(index.vectors) == 400
    assert sorted((m["writer"], m["i"]) for m in index.metadata) == [(w, i) for w in range(2) for i in range(200)]
