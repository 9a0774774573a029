"""Long-term memory stores against brute force: SQLite + sqlite-vec, and PostgreSQL on a
real server the suite starts itself (tests/models/conftest.py), with pgvector where the
extension is installed and the real[] column otherwise."""

import itertools
import threading
import uuid

import numpy as np
import pytest

from fastlstm.models.chat.ltm import SQLiteVecStore, as_uuid
from fastlstm.models.chat.ltm_postgres import PostgresStore, migration_sql

DIM = 16
_db_names = itertools.count()


def _pgvector_available(server) -> bool:
    import psycopg

    with psycopg.connect(server.conninfo()) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is not None


def _fresh_database(server) -> str:
    import psycopg

    name = f"ltm_test_{next(_db_names)}"
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.conninfo(name)


@pytest.fixture(params=["sqlite", "postgres-array", "postgres-pgvector"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteVecStore(tmp_path / "ltm.db", dim=DIM)
    else:
        server = request.getfixturevalue("postgres_server")
        pgvector = request.param == "postgres-pgvector"
        if pgvector and not _pgvector_available(server):
            pytest.skip("the pgvector extension is not installed on this PostgreSQL "
                        "(the real[] column variant ran instead)")
        s = PostgresStore(_fresh_database(server), dim=DIM, use_pgvector=pgvector)
        assert s.vector_type == ("pgvector" if pgvector else "real[]")
    yield s
    s.close()


def _random_unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _brute_force(vectors, ids, query, top_k, threshold):
    scores = vectors @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(ids[i], float(scores[i])) for i in order if scores[i] >= threshold]


def test_top_k_and_threshold_match_brute_force_per_user(store):
    rng = np.random.default_rng(0)
    data = {}
    for user in ("alice", "bob", str(uuid.uuid4())):
        vecs = _random_unit(rng, 80)
        ids = store.add(user, vecs, [f"{user} memory {i}" for i in range(80)], [{"i": [str(i)]} for i in range(80)])
        data[user] = (vecs, ids)
    for user, (vecs, ids) in data.items():
        for top_k, threshold in [(1, -1.0), (5, 0.0), (10, 0.2), (80, -1.0), (200, 0.3), (5, 0.99)]:
            query = rng.standard_normal(DIM).astype(np.float32)
            expected = _brute_force(vecs, ids, query, top_k, threshold)
            got = store.search(user, query, top_k=top_k, threshold=threshold)
            assert [m.message_id for m in got] == [i for i, _ in expected], (user, top_k, threshold)
            np.testing.assert_allclose([m.score for m in got], [s for _, s in expected], atol=2e-5)
            assert all(m.content.startswith(user + " memory ") for m in got)  # never another user's rows
        # a stored vector finds itself first, with its entities
        hit = store.search(user, vecs[7], top_k=1, threshold=0.5)[0]
        assert hit.message_id == ids[7] and hit.ner_entities == {"i": ["7"]} and hit.created_at is not None
    assert store.count() == 240 and store.count("alice") == 80
    assert store.search("nobody-here", data["alice"][0][0], top_k=5, threshold=-1.0) == []


def test_delete_and_replace(store):
    rng = np.random.default_rng(1)
    vecs = _random_unit(rng, 6)
    ids = store.add("alice", vecs, [f"a{i}" for i in range(6)])
    store.add("bob", vecs, [f"b{i}" for i in range(6)], message_ids=ids)  # same message ids, other user
    assert store.delete("alice", [ids[0], ids[1], uuid.uuid4()]) == 2
    assert store.count("alice") == 4 and store.count("bob") == 6
    found = [m.content for m in store.search("alice", vecs[0], top_k=10, threshold=-1.0)]
    assert "a0" not in found and "a1" not in found and len(found) == 4
    # adding an existing (user, message id) replaces the row
    store.add("bob", vecs[5:6], ["b0 again"], message_ids=[ids[0]])
    assert store.count("bob") == 6
    top = store.search("bob", vecs[5], top_k=2, threshold=-1.0)
    assert {m.content for m in top} == {"b0 again", "b5"}
    assert store.delete("bob") == 6 and store.count("bob") == 0 and store.count() == 4


def test_concurrent_writers(store):
    rng = np.random.default_rng(2)
    per_thread = [_random_unit(rng, 20) for _ in range(6)]
    errors, ids = [], {}

    def write(t):
        try:
            ids[t] = [store.add(f"user{t % 2}", v[None], [f"t{t} n{i}"])[0] for i, v in enumerate(per_thread[t])]
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert store.count("user0") == 60 and store.count("user1") == 60
    for t, vecs in enumerate(per_thread):
        for i in (0, 19):
            (hit,) = store.search(f"user{t % 2}", vecs[i], top_k=1, threshold=0.0)
            assert hit.message_id == ids[t][i] and hit.content == f"t{t} n{i}"


def test_bad_input(store):
    with pytest.raises(ValueError, match=r"\(n, 16\)"):
        store.add("u", np.ones((1, 3)), ["x"])
    with pytest.raises(ValueError, match="zero vector"):
        store.add("u", np.zeros((1, DIM)), ["x"])
    with pytest.raises(ValueError, match="finite"):
        store.add("u", np.full((1, DIM), np.nan), ["x"])
    with pytest.raises(ValueError, match="2 vectors, 1 contents"):
        store.add("u", np.ones((2, DIM)), ["x"])
    with pytest.raises(ValueError, match="top_k"):
        store.search("u", np.ones(DIM), top_k=0, threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        store.search("u", np.ones(DIM), top_k=1, threshold=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        store.add("", np.ones((1, DIM)), ["x"])
    assert store.count() == 0


def test_ids_are_uuids():
    u = uuid.uuid4()
    assert as_uuid(u) == u and as_uuid(str(u)) == u
    assert as_uuid("alice") == as_uuid("alice") != as_uuid("bob")


def test_sqlite_file_persists_and_checks_dimension(tmp_path):
    path = tmp_path / "ltm.db"
    with SQLiteVecStore(path, dim=DIM) as s:
        (mid,) = s.add("alice", np.eye(DIM)[:1], ["remember me"])
    with SQLiteVecStore(path, dim=DIM) as s:
        (hit,) = s.search("alice", np.eye(DIM)[0], top_k=3, threshold=0.9)
        assert hit.message_id == mid and hit.content == "remember me"
        assert hit.score == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="another dimension"):
        SQLiteVecStore(path, dim=DIM + 1)


def test_postgres_table_is_the_documented_schema(postgres_server):
    import psycopg

    assert "chat_ltm_memory" in migration_sql()
    conninfo = _fresh_database(postgres_server)
    PostgresStore(conninfo, dim=DIM).close()
    PostgresStore(conninfo, dim=DIM).close()  # the migration is idempotent
    with psycopg.connect(conninfo) as conn:
        columns = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'chat_ltm_memory'"
        ).fetchall())
    assert columns["user_id"] == "uuid" and columns["message_id"] == "uuid"
    assert columns["ner_entities"] == "jsonb" and columns["created_at"] == "timestamp with time zone"
    assert columns["semantic_embedding"] in ("ARRAY", "USER-DEFINED")  # real[] or pgvector's vector
    with pytest.raises(ValueError, match="vector|real"):
        PostgresStore(conninfo, dim=DIM + 1, migrate=False)  # the table holds DIM-long vectors
