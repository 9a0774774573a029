"""PostgreSQL long-term memory: the design's ``chat_ltm_memory`` table, created by the
packaged migration ``sql/create_ltm_memory_table.sql`` (psycopg 3).

With the pgvector extension the embedding is a ``vector(dim)`` column with an HNSW
cosine index (``<=>``; approximate, like every HNSW search); without it a ``real[]``
column whose cosine is computed exactly in SQL. ``store.vector_type`` says which
("pgvector" or "real[]").

>>> store = PostgresStore("host=/tmp/pg port=5432 dbname=chat", dim=128)
>>> store.vector_type   # "pgvector" where the extension is installed
"""

from __future__ import annotations

import importlib.resources
import threading

import numpy as np

from fastlstm.models.chat.ltm import LongTermMemoryStore, Memory, as_uuid

_COLUMNS = "message_id, content, ner_entities, created_at"


def migration_sql() -> str:
    """The text of the packaged migration ``create_ltm_memory_table.sql``."""
    return importlib.resources.files("fastlstm.models.chat").joinpath("sql/create_ltm_memory_table.sql").read_text()


def _vector_literal(v: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


class PostgresStore(LongTermMemoryStore):
    """``chat_ltm_memory`` on a PostgreSQL server at ``conninfo`` (a libpq connection string).

    ``migrate`` runs the packaged migration first (idempotent); ``use_pgvector=False`` makes a
    new table use the ``real[]`` column even where pgvector is installed. Each thread gets
    its own connection, so writers run concurrently on the server.
    """

    def __init__(self, conninfo: str, *, dim: int, migrate: bool = True, use_pgvector: bool = True) -> None:
        import psycopg

        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self._psycopg, self.conninfo, self.dim = psycopg, conninfo, dim
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
        conn = self._conn()
        if migrate:
            with conn.transaction():
                conn.execute(f"SET LOCAL fastlstm.embedding_dim = '{dim}'")
                conn.execute(f"SET LOCAL fastlstm.use_pgvector = '{'on' if use_pgvector else 'off'}'")
                conn.execute(migration_sql())
        row = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = 'chat_ltm_memory'::regclass AND attname = 'semantic_embedding'").fetchone()
        if row is None:
            raise RuntimeError("chat_ltm_memory has no semantic_embedding column: run create_ltm_memory_table.sql")
        if row[0].startswith("vector"):
            self.vector_type = "pgvector"
            if row[0] != f"vector({dim})":
                raise ValueError(f"chat_ltm_memory.semantic_embedding is {row[0]}, not vector({dim})")
        elif row[0] == "real[]":
            self.vector_type = "real[]"
            checks = [r[0] for r in conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                                 "WHERE conrelid = 'chat_ltm_memory'::regclass AND contype = 'c'")]
            if not any(f"cardinality(semantic_embedding) = {dim})" in c for c in checks):
                raise ValueError(f"chat_ltm_memory.semantic_embedding is not checked to hold real[{dim}]: {checks}")
        else:
            raise ValueError(f"chat_ltm_memory.semantic_embedding has unsupported type {row[0]}")

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.conninfo, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _embedding(self, v: np.ndarray):
        return _vector_literal(v) if self.vector_type == "pgvector" else v.tolist()

    def _insert(self, user, rows) -> None:
        cast = "vector" if self.vector_type == "pgvector" else "real[]"
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO chat_ltm_memory (user_id, message_id, content, ner_entities, semantic_embedding) "
                f"VALUES (%s, %s, %s, %s::jsonb, %s::{cast}) ON CONFLICT (user_id, message_id) DO UPDATE SET "
                f"content = EXCLUDED.content, ner_entities = EXCLUDED.ner_entities, "
                f"semantic_embedding = EXCLUDED.semantic_embedding, created_at = now()",
                [(user, m, c, e, self._embedding(v)) for m, c, e, v in rows])

    def _search(self, user, query, top_k, threshold) -> list[Memory]:
        if self.vector_type == "pgvector":
            sql = (f"SELECT {_COLUMNS}, score FROM (SELECT {_COLUMNS}, id, "
                   f"1 - (semantic_embedding <=> %(q)s::vector) AS score FROM chat_ltm_memory "
                   f"WHERE user_id = %(u)s ORDER BY semantic_embedding <=> %(q)s::vector, id LIMIT %(k)s) AS near "
                   f"WHERE score >= %(t)s ORDER BY score DESC, id")
        else:
            # Rows and query are unit vectors, so the dot product is the cosine (summed in float8).
            sql = (f"SELECT {_COLUMNS}, score FROM (SELECT {_COLUMNS}, id, (SELECT sum(a::float8 * b::float8) "
                   f"FROM unnest(semantic_embedding, %(q)s::real[]) AS t(a, b)) AS score "
                   f"FROM chat_ltm_memory WHERE user_id = %(u)s) AS scored "
                   f"WHERE score >= %(t)s ORDER BY score DESC, id LIMIT %(k)s")
        rows = self._conn().execute(sql, {"q": self._embedding(query), "u": user, "k": top_k, "t": threshold})
        return [Memory(m, c, e, t, float(s)) for m, c, e, t, s in rows.fetchall()]

    def delete(self, user_id, message_ids=None) -> int:
        user = as_uuid(user_id)
        conn = self._conn()
        if message_ids is None:
            cur = conn.execute("DELETE FROM chat_ltm_memory WHERE user_id = %s", (user,))
        else:
            ids = [as_uuid(m) for m in message_ids]
            cur = conn.execute("DELETE FROM chat_ltm_memory WHERE user_id = %s AND message_id = ANY(%s)", (user, ids))
        return cur.rowcount

    def count(self, user_id=None) -> int:
        conn = self._conn()
        if user_id is None:
            return conn.execute("SELECT count(*) FROM chat_ltm_memory").fetchone()[0]
        return conn.execute("SELECT count(*) FROM chat_ltm_memory WHERE user_id = %s", (as_uuid(user_id),)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


__all__ = ["PostgresStore", "migration_sql"]
