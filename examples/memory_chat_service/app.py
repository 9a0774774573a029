"""Memory-augmented chat over HTTP: the design's chat endpoint with an optional user_id,
short-term memory per user and long-term memory in SQLite (default, no server) or
PostgreSQL.

Run:  pip install "fastlstm[chat]" uvicorn
      LTM_DATABASE=sqlite:///chat_ltm.db uvicorn --factory --app-dir examples/memory_chat_service app:create_app
      curl -s localhost:8000/chat -H 'content-type: application/json' \\
           -d '{"message": "I work at Contoso as a nurse", "user_id": "u1"}'

Environment: LTM_DATABASE (sqlite:///PATH or a postgresql:// URL), CHAT_ENCODER (a file saved
with torch.save(encoder.state_dict()); without it a seeded, untrained LSTMEncoder, see
docs/memory_chat.md for its retrieval quality), and the memory parameters STM_MAX_MESSAGES,
STM_MAX_TOKENS, LTM_TOP_K, LTM_SIMILARITY_THRESHOLD, NER_MODEL. No LLM ships with this
example: replies come from ``no_language_model`` (it shows the assembled context) unless
``create_app(llm=...)`` is given one.
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from fastlstm.models.chat import ChatConfig, LSTMEncoder, MemoryAugmentedChat, SQLiteVecStore, no_language_model


class ChatRequest(BaseModel):
    message: str = Field(min_length=1)
    user_id: str | None = None  # optional, for backward compatibility: absent means one shared anonymous user


class MemoryOut(BaseModel):
    message_id: str
    content: str
    score: float
    ner_entities: dict


class ChatResponse(BaseModel):
    reply: str
    message_id: str
    memories: list[MemoryOut]
    entities: dict


def open_store(url: str, dim: int):
    if url.startswith("sqlite:///"):
        return SQLiteVecStore(url[len("sqlite:///"):] or ":memory:", dim=dim)
    if url.startswith(("postgresql://", "postgres://")):
        from fastlstm.models.chat.ltm_postgres import PostgresStore

        return PostgresStore(url, dim=dim)
    raise ValueError(f"LTM_DATABASE={url!r}: use sqlite:///PATH or postgresql://...")


def load_encoder(path: str | None) -> LSTMEncoder:
    torch.manual_seed(0)
    encoder = LSTMEncoder()
    if path:
        encoder.load_state_dict(torch.load(path, weights_only=True))
    return encoder.eval()


def create_app(chat: MemoryAugmentedChat | None = None, *, llm=None) -> FastAPI:
    if chat is None:
        encoder = load_encoder(os.environ.get("CHAT_ENCODER"))
        store = open_store(os.environ.get("LTM_DATABASE", "sqlite:///chat_ltm.db"), encoder.dim)
        chat = MemoryAugmentedChat(encoder.encode, store, llm=llm or no_language_model, config=ChatConfig.from_env())
    app = FastAPI(title="memory chat")
    app.state.chat = chat

    @app.post("/chat", response_model=ChatResponse)
    def post_chat(request: ChatRequest) -> ChatResponse:
        if not request.message.strip():
            raise HTTPException(422, "message is blank")
        turn = chat.respond(request.user_id, request.message)
        return ChatResponse(
            reply=turn.reply, message_id=str(turn.message_id), entities=turn.entities,
            memories=[MemoryOut(message_id=str(m.message_id), content=m.content, score=m.score,
                                ner_entities=m.ner_entities) for m in turn.memories])

    @app.delete("/memory/{user_id}")
    def forget(user_id: str) -> dict:
        return {"deleted": chat.forget(user_id)}

    @app.get("/health")
    def health() -> dict:
        c = chat.config
        return {"store": type(chat.store).__name__, "llm": getattr(chat.llm, "__name__", type(chat.llm).__name__),
                "ltm_top_k": c.ltm_top_k, "ltm_similarity_threshold": c.ltm_similarity_threshold,
                "stm_max_messages": c.stm_max_messages, "stm_max_tokens": c.stm_max_tokens}

    return app
