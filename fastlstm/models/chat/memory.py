"""State around the encoder-decoder: per-session decoder state and an in-process
exact cosine-similarity index of float32 vectors (the brute-force reference the
long-term memory stores in ``ltm`` are tested against). Defaults follow the
memory-chat design's configuration names.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from fastlstm.models.chat.safetensors_io import load_file, save_file

LTM_TOP_K = 5
# Calibrated (best F1 of the top-5 hits) for the default LSTMEncoder as initialised with seed 0 on the
# paraphrase set of fastlstm.models.chat.calibration; see docs/memory_chat.md. Recalibrate for your encoder.
LTM_SIMILARITY_THRESHOLD = 0.98


# --------------------------------------------------------------------------
# Hidden-state management
# --------------------------------------------------------------------------


@dataclass
class SessionState:
    """The decoder (h, c) a session carries from one turn to the next, each
    (L, 1, H) (or None before the first turn), and the turn count.

    >>> s = SessionState("user-1"); s.update(state); s.save("user-1.safetensors")
    """

    session_id: str
    h: Tensor | None = None
    c: Tensor | None = None
    turns: int = 0

    def update(self, state: tuple[Tensor, Tensor]) -> None:
        """Stores a copy of ``state`` (so no caller can alias another session's tensors)."""
        h, c = state
        if h.dim() != 3 or c.dim() != 3 or h.shape[:2] != c.shape[:2] or h.shape[1] != 1:
            raise ValueError(f"session state must be (L, 1, H) tensors, got {tuple(h.shape)} and {tuple(c.shape)}")
        self.h, self.c = h.detach().clone(), c.detach().clone()
        self.turns += 1

    @property
    def carried(self) -> tuple[Tensor, Tensor] | None:
        return None if self.h is None else (self.h.clone(), self.c.clone())

    def reset(self) -> None:
        self.h = self.c = None
        self.turns = 0

    def _tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        if self.h is None:
            return {}
        return {prefix + "h": self.h.float().cpu().numpy(), prefix + "c": self.c.float().cpu().numpy()}

    def save(self, path: str | os.PathLike) -> None:
        save_file(self._tensors(), path, {"session_id": self.session_id, "turns": str(self.turns)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SessionState":
        tensors, meta = load_file(path)
        state = cls(meta.get("session_id", ""), turns=int(meta.get("turns", "0")))
        if "h" in tensors:
            state.h, state.c = torch.from_numpy(tensors["h"]), torch.from_numpy(tensors["c"])
        return state


class SessionStore:
    """Sessions by id, each with its own :class:`SessionState`; thread-safe.

    >>> store = SessionStore(); text = store.reconstruct(model, "user-1", "hello")
    """

    def __init__(self) -> None:
        self._sessions: dict[str, SessionState] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> SessionState:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty str")
        with self._lock:
            return self._sessions.setdefault(session_id, SessionState(session_id))

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def reconstruct(self, model, session_id: str, text: str, *, max_length: int = 64) -> str:
        """One turn of the decoder: what it generates from ``text`` and the session's carried state
        (then the new state is carried). The training recipe here teaches the decoder to rebuild
        its input, so this is a reconstruction of ``text``, not a reply: a chat answer comes from
        the LLM that :class:`~fastlstm.models.chat.service.MemoryAugmentedChat` is given."""
        session = self.get(session_id)
        ids, (h, c) = model.generate_ids([text], max_length=max_length, carried=session.carried)
        session.update((h, c))
        return model.tokenizer.decode(ids[0])

    def save(self, path: str | os.PathLike) -> None:
        """All sessions in one safetensors file (ids in the metadata, tensors ``s<i>.h``/``s<i>.c``)."""
        with self._lock:
            sessions = list(self._sessions.values())
        tensors, index = {}, []
        for i, s in enumerate(sessions):
            tensors.update(s._tensors(f"s{i}."))
            index.append({"id": s.session_id, "turns": s.turns})
        save_file(tensors, path, {"sessions": json.dumps(index)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SessionStore":
        tensors, meta = load_file(path)
        store = cls()
        for i, entry in enumerate(json.loads(meta.get("sessions", "[]"))):
            s = SessionState(entry["id"], turns=int(entry["turns"]))
            if f"s{i}.h" in tensors:
                s.h, s.c = torch.from_numpy(tensors[f"s{i}.h"]), torch.from_numpy(tensors[f"s{i}.c"])
            store._sessions[s.session_id] = s
        return store


# --------------------------------------------------------------------------
# Long-term memory
# --------------------------------------------------------------------------


@dataclass
class Hit:
    score: float
    id: int
    metadata: dict


class MemoryIndex:
    """Exact cosine-similarity search over float32 vectors with metadata.

    Vectors are normalised on insert; ``search`` returns at most ``top_k`` hits
    whose cosine similarity is >= ``threshold``, best first (ties: lower id first).

    >>> index = MemoryIndex(dim=128); index.add(vectors, [{"text": t} for t in texts])
    >>> index.search(query_vector)          # [Hit(score, id, metadata), ...]
    """

    def __init__(self, dim: int, *, top_k: int = LTM_TOP_K, threshold: float = LTM_SIMILARITY_THRESHOLD) -> None:
        if dim < 1 or top_k < 1 or not -1.0 <= threshold <= 1.0:
            raise ValueError("dim and top_k must be >= 1 and threshold in [-1, 1]")
        self.dim, self.top_k, self.threshold = dim, top_k, threshold
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self.metadata: list[dict] = []
        # add() replaces the vectors and extends the metadata together; searches
        # and saves read the pair under the same lock (a chat service shares one index).
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.metadata)

    @property
    def vectors(self) -> np.ndarray:
        """(n, dim) float32, unit length (what a pgvector column would hold)."""
        return self._vectors

    def _normalise(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float32)
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}), got {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("vectors must be finite")
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.maximum(norms, 1e-12)

    def add(self, vectors: np.ndarray, metadata: Sequence[dict] | None = None) -> list[int]:
        """Adds (n, dim) vectors (and one JSON-serialisable dict each); returns their ids."""
        v = self._normalise(vectors)
        metadata = [{} for _ in range(len(v))] if metadata is None else list(metadata)
        if len(metadata) != len(v):
            raise ValueError(f"{len(v)} vectors but {len(metadata)} metadata entries")
        json.dumps(metadata)  # fail now, not at save time
        with self._lock:
            start = len(self.metadata)
            self._vectors = np.concatenate([self._vectors, v])
            self.metadata.extend(metadata)
            return list(range(start, len(self.metadata)))

    def search(self, query: np.ndarray, *, top_k: int | None = None, threshold: float | None = None) -> list[Hit]:
        """Hits for one query vector (dim,), best first."""
        q = self._normalise(query)
        if q.shape[0] != 1:
            raise ValueError("search takes one query vector; use search_batch for several")
        return self.search_batch(q, top_k=top_k, threshold=threshold)[0]

    def search_batch(self, queries: np.ndarray, *, top_k: int | None = None,
                     threshold: float | None = None) -> list[list[Hit]]:
        k = self.top_k if top_k is None else top_k
        thr = self.threshold if threshold is None else threshold
        q = self._normalise(queries)
        with self._lock:
            vectors, metadata = self._vectors, self.metadata[:len(self._vectors)]
        if len(vectors) == 0:
            return [[] for _ in range(len(q))]
        scores = q @ vectors.T
        results = []
        for row in scores:
            # Stable sort on -score keeps lower ids first among equal scores.
            order = np.argsort(-row, kind="stable")[:k]
            results.append([Hit(float(row[i]), int(i), metadata[i]) for i in order if row[i] >= thr])
        return results

    def save(self, path: str | os.PathLike) -> None:
        with self._lock:
            vectors, metadata = self._vectors, json.dumps(self.metadata)
        save_file({"vectors": vectors}, path, {
            "metadata": metadata, "top_k": str(self.top_k), "threshold": repr(self.threshold)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MemoryIndex":
        tensors, meta = load_file(path)
        vectors = tensors["vectors"].astype(np.float32)
        index = cls(vectors.shape[1], top_k=int(meta["top_k"]), threshold=float(meta["threshold"]))
        index._vectors = vectors
        index.metadata = json.loads(meta["metadata"])
        if len(index.metadata) != len(vectors):
            raise ValueError(f"{path}: {len(vectors)} vectors but {len(index.metadata)} metadata entries")
        return index
