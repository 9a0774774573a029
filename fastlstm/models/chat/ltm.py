"""Long-term memory stores: the memory-chat design's ``chat_ltm_memory`` table
(``user_id``, ``message_id``, ``semantic_embedding``, ``ner_entities``,
``created_at``, plus the remembered text) behind one interface.

:class:`SQLiteVecStore` is the embedded default (one file, no server; vectors in
a sqlite-vec ``vec0`` table partitioned by user). :class:`PostgresStore`
(``fastlstm.models.chat.ltm_postgres``) is the server backend. Both search
exactly one user's rows, return at most ``top_k`` entries with cosine similarity
>= ``threshold``, best first, and are safe to write from several threads.

>>> store = SQLiteVecStore("ltm.db", dim=128)
>>> store.add("user-1", vectors, ["I work at Contoso"], [{"companies": ["Contoso"]}])
>>> store.search("user-1", query_vector, top_k=5, threshold=0.5)   # [Memory, ...]
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# user_id and message_id are UUIDs in the design's schema; other ids map to a stable UUID.
_ID_NAMESPACE = uuid.UUID("6f1c2a4e-5b0d-4c4b-9a53-2d3e7f0c8a11")


def as_uuid(value: str | uuid.UUID) -> uuid.UUID:
    """``value`` if it is a UUID (or its text), else the UUIDv5 of the text (same text, same UUID)."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty str or UUID, got {value!r}")
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.uuid5(_ID_NAMESPACE, value)


@dataclass
class Memory:
    """One remembered message: its text, entities, score against the query (search only)."""

    message_id: uuid.UUID
    content: str
    ner_entities: dict = field(default_factory=dict)
    created_at: dt.datetime | None = None
    score: float | None = None


def unit_vectors(vectors, dim: int) -> np.ndarray:
    """(n, dim) float32 rows scaled to unit length; ValueError on a wrong shape or non-finite values."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"vectors must be (n, {dim}), got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("vectors must be finite")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a zero vector has no direction to compare")
    return np.ascontiguousarray(v / norms)


def _check_search(top_k: int, threshold: float) -> None:
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [-1, 1], got {threshold!r}")


class LongTermMemoryStore(abc.ABC):
    """Per-user long-term memory. Implementations store unit vectors and search exactly
    (or, for pgvector's HNSW index, approximately: see :class:`PostgresStore`)."""

    dim: int

    def add(self, user_id: str, vectors, contents: Sequence[str], entities: Sequence[dict] | None = None,
            message_ids: Sequence[str | uuid.UUID] | None = None) -> list[uuid.UUID]:
        """Remembers ``contents`` (one vector each) for ``user_id``; returns their message ids
        (new UUIDs unless given). Adding an existing (user, message id) replaces it."""
        v = unit_vectors(vectors, self.dim)
        contents = list(contents)
        entities = [{} for _ in contents] if entities is None else list(entities)
        ids = [uuid.uuid4() for _ in contents] if message_ids is None else [as_uuid(m) for m in message_ids]
        if not len(v) == len(contents) == len(entities) == len(ids):
            raise ValueError(f"{len(v)} vectors, {len(contents)} contents, {len(entities)} entity dicts "
                             f"and {len(ids)} message ids")
        if not all(isinstance(c, str) for c in contents):
            raise TypeError("contents must be str")
        rows = [(i, c, json.dumps(e), vec) for i, c, e, vec in zip(ids, contents, entities, v)]
        if rows:
            self._insert(as_uuid(user_id), rows)
        return ids

    def search(self, user_id: str, query, *, top_k: int, threshold: float) -> list[Memory]:
        """At most ``top_k`` of ``user_id``'s memories with cosine >= ``threshold``, best first."""
        _check_search(top_k, threshold)
        q = unit_vectors(query, self.dim)
        if len(q) != 1:
            raise ValueError("search takes one query vector")
        return self._search(as_uuid(user_id), q[0], top_k, float(threshold))

    @abc.abstractmethod
    def _insert(self, user: uuid.UUID, rows: list[tuple[uuid.UUID, str, str, np.ndarray]]) -> None: ...

    @abc.abstractmethod
    def _search(self, user: uuid.UUID, query: np.ndarray, top_k: int, threshold: float) -> list[Memory]: ...

    @abc.abstractmethod
    def delete(self, user_id: str, message_ids: Sequence[str | uuid.UUID] | None = None) -> int:
        """Forgets the given messages of ``user_id`` (all of them when None); returns how many."""

    @abc.abstractmethod
    def count(self, user_id: str | None = None) -> int:
        """Memories of ``user_id`` (of everyone when None)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sqlite_module():
    """The standard library's sqlite3 where it can load extensions, else ``sqlean`` (sqlean.py,
    a drop-in sqlite3 built with extension loading: some Python builds compile it out)."""
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        import sqlean
    except ImportError:
        raise RuntimeError("this Python's sqlite3 cannot load extensions (sqlite-vec needs it): "
                           "pip install 'fastlstm[chat]' (brings sqlean.py)") from None
    return sqlean


class SQLiteVecStore(LongTermMemoryStore):
    """The embedded store: ``chat_ltm_memory`` rows in SQLite and their vectors in a sqlite-vec
    ``vec0`` table (cosine distance, ``user_id`` partition key, exact KNN).

    ``path`` is a file (WAL journal, so other processes can read while one writes) or ":memory:".
    One connection serialised by a lock: threads may call any method at once.
    """

    def __init__(self, path: str | os.PathLike = ":memory:", *, dim: int) -> None:
        import sqlite_vec

        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self.dim, self.path = dim, os.fspath(path)
        sqlite = _sqlite_module()
        self.driver = sqlite.__name__
        self._lock = threading.Lock()
        self._db = sqlite.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db.enable_load_extension(True)
        sqlite_vec.load(self._db)
        self._db.enable_load_extension(False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(f"""
            CREATE TABLE IF NOT EXISTS chat_ltm_memory (
                id INTEGER PRIMARY KEY,
                user_id TEXT NOT NULL,
                message_id TEXT NOT NULL,
                content TEXT NOT NULL,
                ner_entities TEXT NOT NULL DEFAULT '{{}}' CHECK (json_valid(ner_entities)),
                created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
                UNIQUE (user_id, message_id));
            CREATE INDEX IF NOT EXISTS chat_ltm_memory_user ON chat_ltm_memory (user_id, created_at);
            CREATE VIRTUAL TABLE IF NOT EXISTS chat_ltm_memory_vec USING vec0(
                user_id TEXT PARTITION KEY,
                semantic_embedding FLOAT[{dim}] distance_metric=cosine);
        """)
        stored = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'chat_ltm_memory_vec'").fetchone()[0]
        if f"FLOAT[{dim}]" not in stored.upper():
            raise ValueError(f"{self.path} holds vectors of another dimension than {dim}: {stored}")

    def _insert(self, user, rows) -> None:
        u = str(user)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for message_id, content, entities, vec in rows:
                    self._delete_locked(u, [str(message_id)])
                    cur = self._db.execute(
                        "INSERT INTO chat_ltm_memory (user_id, message_id, content, ner_entities) VALUES (?, ?, ?, ?)",
                        (u, str(message_id), content, entities))
                    self._db.execute("INSERT INTO chat_ltm_memory_vec (rowid, user_id, semantic_embedding) "
                                     "VALUES (?, ?, ?)", (cur.lastrowid, u, vec.tobytes()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _search(self, user, query, top_k, threshold) -> list[Memory]:
        # vec0's KNN is an exact scan of the user's partition; the threshold filters the k nearest.
        with self._lock:
            rows = self._db.execute(
                "SELECT m.message_id, m.content, m.ner_entities, m.created_at, v.distance "
                "FROM (SELECT rowid, distance FROM chat_ltm_memory_vec "
                "      WHERE semantic_embedding MATCH ? AND k = ? AND user_id = ?) AS v "
                "JOIN chat_ltm_memory AS m ON m.id = v.rowid ORDER BY v.distance, m.id",
                (query.astype(np.float32).tobytes(), top_k, str(user))).fetchall()
        out = []
        for message_id, content, entities, created, distance in rows:
            score = 1.0 - float(distance)
            if score >= threshold:
                out.append(Memory(uuid.UUID(message_id), content, json.loads(entities),
                                  dt.datetime.fromisoformat(created), score))
        return out

    def _delete_locked(self, user: str, message_ids: list[str] | None) -> int:
        where, args = "user_id = ?", [user]
        if message_ids is not None:
            where += f" AND message_id IN ({','.join('?' * len(message_ids))})"
            args += message_ids
        ids = [r[0] for r in self._db.execute(f"SELECT id FROM chat_ltm_memory WHERE {where}", args)]
        for rowid in ids:
            self._db.execute("DELETE FROM chat_ltm_memory_vec WHERE rowid = ?", (rowid,))
            self._db.execute("DELETE FROM chat_ltm_memory WHERE id = ?", (rowid,))
        return len(ids)

    def delete(self, user_id, message_ids=None) -> int:
        u = str(as_uuid(user_id))
        ids = None if message_ids is None else [str(as_uuid(m)) for m in message_ids]
        if ids == []:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._delete_locked(u, ids)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def count(self, user_id=None) -> int:
        with self._lock:
            if user_id is None:
                return self._db.execute("SELECT count(*) FROM chat_ltm_memory").fetchone()[0]
            return self._db.execute("SELECT count(*) FROM chat_ltm_memory WHERE user_id = ?",
                                    (str(as_uuid(user_id)),)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
