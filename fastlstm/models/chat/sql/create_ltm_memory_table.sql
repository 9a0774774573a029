-- Long-term memory of the memory-augmented chat (docs/memory_chat.md): one row per
-- remembered message. The design's user_id references auth.users and message_id
-- references chat_messages; add those foreign keys where the tables exist.
--
-- The embedding dimension comes from the setting fastlstm.embedding_dim (default 128):
--   psql -c "SET fastlstm.embedding_dim = '128'" -f create_ltm_memory_table.sql
-- With the pgvector extension available, semantic_embedding is vector(dim) with an HNSW
-- cosine index; without it, a real[] of that length (similarity computed in SQL).
DO $migration$
DECLARE
    dim int := coalesce(nullif(current_setting('fastlstm.embedding_dim', true), ''), '128')::int;
    use_pgvector boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')
        AND coalesce(nullif(current_setting('fastlstm.use_pgvector', true), ''), 'on')::boolean;
    embedding_type text;
BEGIN
    IF use_pgvector THEN
        CREATE EXTENSION IF NOT EXISTS vector;
        embedding_type := format('vector(%s)', dim);
    ELSE
        embedding_type := format('real[] CHECK (cardinality(semantic_embedding) = %s)', dim);
    END IF;
    EXECUTE format($t$
        CREATE TABLE IF NOT EXISTS chat_ltm_memory (
            id bigserial PRIMARY KEY,
            user_id uuid NOT NULL,
            message_id uuid NOT NULL,
            content text NOT NULL,
            semantic_embedding %s NOT NULL,
            ner_entities jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (user_id, message_id))$t$, embedding_type);
    IF use_pgvector THEN
        CREATE INDEX IF NOT EXISTS chat_ltm_memory_embedding_idx
            ON chat_ltm_memory USING hnsw (semantic_embedding vector_cosine_ops);
    END IF;
    CREATE INDEX IF NOT EXISTS chat_ltm_memory_user_idx ON chat_ltm_memory (user_id, created_at);
END
$migration$;
