"""The memory-augmented chat service: before a turn it gathers the user's short-term
memory and the top-k long-term memories similar to the message and assembles the
context; the LLM (any ``prompt -> reply`` callable) answers; then both memories are
updated (the message goes to the STM and, with its embedding and entities, to the LTM).

>>> chat = MemoryAugmentedChat(encoder.encode, SQLiteVecStore("ltm.db", dim=encoder.dim), llm=my_llm)
>>> turn = chat.respond("user-1", "Which company did I say I work for?")
>>> turn.reply, turn.memories, turn.prompt
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from fastlstm.models.chat.ltm import LongTermMemoryStore, Memory
from fastlstm.models.chat.memory import LTM_SIMILARITY_THRESHOLD, LTM_TOP_K
from fastlstm.models.chat.ner import EntityExtractor, SpacyNER
from fastlstm.models.chat.stm import STM_MAX_MESSAGES, STM_MAX_TOKENS, ShortTermMemory, TokenCounter

LLM = Callable[[str], str]
DEFAULT_USER = "anonymous"


def _env(environ: Mapping[str, str], name: str, parse, default, check: Callable[[object], bool], rule: str):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: must be {rule}") from None
    if not check(value):
        raise ValueError(f"{name}={raw!r}: must be {rule}")
    return value


@dataclass(frozen=True)
class ChatConfig:
    """The design's memory parameters. ``ner_model`` empty means spaCy's blank English
    pipeline with the packaged entity patterns (the design's ``en_core_web_sm`` is a
    download, which this package never does: install it and set ``NER_MODEL`` to use it)."""

    stm_max_messages: int = STM_MAX_MESSAGES
    stm_max_tokens: int = STM_MAX_TOKENS
    ltm_top_k: int = LTM_TOP_K
    ltm_similarity_threshold: float = LTM_SIMILARITY_THRESHOLD
    ner_model: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ChatConfig":
        """Reads ``STM_MAX_MESSAGES``, ``STM_MAX_TOKENS``, ``LTM_TOP_K``, ``LTM_SIMILARITY_THRESHOLD``
        and ``NER_MODEL`` (unset or empty: the default); ValueError naming a bad one."""
        env = os.environ if environ is None else environ
        positive = (lambda v: v >= 1, "an integer >= 1")
        return cls(
            stm_max_messages=_env(env, "STM_MAX_MESSAGES", int, cls.stm_max_messages, *positive),
            stm_max_tokens=_env(env, "STM_MAX_TOKENS", int, cls.stm_max_tokens, *positive),
            ltm_top_k=_env(env, "LTM_TOP_K", int, cls.ltm_top_k, *positive),
            ltm_similarity_threshold=_env(env, "LTM_SIMILARITY_THRESHOLD", float, cls.ltm_similarity_threshold,
                                          lambda v: -1.0 <= v <= 1.0, "a number in [-1, 1]"),
            ner_model=env.get("NER_MODEL", "").strip(),
        )


def no_language_model(prompt: str) -> str:
    """Not a model: says that no LLM is configured and shows what it would have been given.
    For trying the memory plumbing only; pass a real LLM callable to answer users."""
    return "[no language model configured: this is the context an LLM would receive]\n" + prompt


@dataclass
class ChatTurn:
    reply: str
    message_id: uuid.UUID
    prompt: str
    memories: list[Memory] = field(default_factory=list)
    entities: dict = field(default_factory=dict)


def assemble_prompt(stm: ShortTermMemory, memories: Sequence[Memory], message: str) -> str:
    """The LLM's input: relevant long-term memories, the recent conversation, the new message."""
    parts = []
    if memories:
        parts.append("Relevant things the user said before:\n" + "\n".join(f"- {m.content}" for m in memories))
    recent = stm.context()
    if recent:
        parts.append("Recent conversation:\n" + recent)
    parts.append(f"user: {message}\nassistant:")
    return "\n\n".join(parts)


class MemoryAugmentedChat:
    """STM per user (in memory) + LTM (``store``) around an LLM callable.

    ``encode`` maps texts to vectors (n, store.dim), e.g. ``LSTMEncoder.encode``; ``ner``
    defaults to :class:`SpacyNER` built from ``config.ner_model``. Thread-safe: turns of
    different users run concurrently; turns of one user are serialised.
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], store: LongTermMemoryStore, *, llm: LLM,
                 config: ChatConfig | None = None, ner: EntityExtractor | None = None,
                 count_tokens: TokenCounter | None = None, stm_factory: Callable[[], ShortTermMemory] | None = None):
        if not callable(llm):
            raise TypeError("llm must be a callable prompt -> reply (no_language_model only shows the context)")
        self.encode, self.store, self.llm = encode, store, llm
        self.config = config or ChatConfig.from_env()
        self.ner = ner if ner is not None else SpacyNER(self.config.ner_model or None)
        extra = {} if count_tokens is None else {"count_tokens": count_tokens}
        self._new_stm = stm_factory or (lambda: ShortTermMemory(
            max_messages=self.config.stm_max_messages, max_tokens=self.config.stm_max_tokens, **extra))
        self._stm: dict[str, ShortTermMemory] = {}
        self._user_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _user(self, user_id: str | None) -> tuple[str, threading.Lock]:
        user = user_id or DEFAULT_USER
        with self._lock:
            if user not in self._stm:
                self._stm[user] = self._new_stm()
                self._user_locks[user] = threading.Lock()
            return user, self._user_locks[user]

    def short_term(self, user_id: str | None) -> ShortTermMemory:
        return self._stm[self._user(user_id)[0]]

    def context(self, user_id: str | None, message: str) -> tuple[str, list[Memory], np.ndarray]:
        """Before a turn: (prompt, the retrieved memories, the message's vector)."""
        user = user_id or DEFAULT_USER
        vector = np.asarray(self.encode([message]), dtype=np.float32)[0]
        memories = self.store.search(user, vector, top_k=self.config.ltm_top_k,
                                     threshold=self.config.ltm_similarity_threshold)
        return assemble_prompt(self.short_term(user), memories, message), memories, vector

    def respond(self, user_id: str | None, message: str) -> ChatTurn:
        """One turn: retrieve, ask the LLM, then remember the message and the reply."""
        if not isinstance(message, str) or not message.strip():
            raise ValueError("message must be a non-empty str")
        user, lock = self._user(user_id)
        with lock:
            prompt, memories, vector = self.context(user, message)
            reply = self.llm(prompt)
            if not isinstance(reply, str):
                raise TypeError(f"the llm returned {type(reply).__name__}, not str")
            entities = self.ner(message)
            (message_id,) = self.store.add(user, vector[None], [message], [entities])
            stm = self._stm[user]
            stm.add("user", message)
            stm.add("assistant", reply)
        return ChatTurn(reply, message_id, prompt, memories, entities)

    def forget(self, user_id: str | None) -> int:
        """Drops the user's short-term memory and deletes their long-term memories."""
        user, lock = self._user(user_id)
        with lock:
            self._stm[user].clear()
            return self.store.delete(user)
