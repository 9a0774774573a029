"""Short-term memory: the last messages of a conversation within a message and token
budget, with the older ones folded into a text summary the LLM reads.

Tokens are counted by a pluggable counter (``text -> int``): bytes plus one
separator by default (:meth:`ByteTokenizer.count`), or any tokenizer's ``encode``
through :func:`token_counter`. The summariser is pluggable too; the default
:class:`ExtractiveSummariser` keeps the sentences whose words recur most.

>>> stm = ShortTermMemory(count_tokens=token_counter(my_tokenizer.encode))
>>> stm.add("user", "I moved to Lisbon."); print(stm.context())
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from fastlstm.models.chat.tokenizer import ByteTokenizer

STM_MAX_MESSAGES = 15
STM_MAX_TOKENS = 500

TokenCounter = Callable[[str], int]


def token_counter(encode: Callable[[str], Sequence]) -> TokenCounter:
    """A counter from any tokenizer's ``encode`` (text -> ids): the number of ids."""
    return lambda text: len(encode(text))


@dataclass
class Message:
    role: str
    text: str
    tokens: int


class Summariser(Protocol):
    """(messages to fold in, the previous summary or "", token budget, counter) -> summary text
    of at most ``max_tokens`` tokens."""

    def __call__(self, messages: Sequence[Message], previous: str, max_tokens: int,
                 count_tokens: TokenCounter) -> str: ...


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
# Function words carry no topic: they must not make a sentence look central.
_STOP = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now
of off on once only or other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves also yes ok okay i'm it's""".split())


class ExtractiveSummariser:
    """Luhn-style extractive summary: every sentence of the previous summary and of the
    folded messages scores the mean corpus frequency of its content words; the best
    sentences that fit the budget are kept, in conversation order, one ``- role: sentence``
    line each under ``header``."""

    def __init__(self, header: str = "Summary of earlier messages:") -> None:
        self.header = header

    def _sentences(self, messages: Sequence[Message], previous: str) -> list[tuple[str, str]]:
        out = []
        for line in previous.splitlines():
            if line.startswith("- ") and ": " in line:
                role, text = line[2:].split(": ", 1)
                out.append((role, text))
        for m in messages:
            out += [(m.role, s.strip()) for s in _SENTENCE.split(m.text) if s.strip()]
        return out

    def __call__(self, messages, previous, max_tokens, count_tokens) -> str:
        sentences = self._sentences(messages, previous)
        words = [[w for w in _WORD.findall(s.lower()) if w not in _STOP] for _, s in sentences]
        freq = Counter(w for ws in words for w in set(ws))
        scores = [sum(freq[w] for w in ws) / math.sqrt(len(ws)) if ws else 0.0 for ws in words]
        budget = max_tokens - count_tokens(self.header)
        chosen = []
        # Best first; among equals the newer sentence (it is about the latest topic).
        for i in sorted(range(len(sentences)), key=lambda i: (-scores[i], -i)):
            line = f"- {sentences[i][0]}: {sentences[i][1]}"
            cost = count_tokens(line)
            if cost <= budget:
                chosen.append((i, line))
                budget -= cost
        if not chosen:
            return ""
        return "\n".join([self.header] + [line for _, line in sorted(chosen)])


@dataclass
class ShortTermMemory:
    """The last ``max_messages`` messages within ``max_tokens``; older ones are folded into
    ``summary`` (text of at most ``summary_max_tokens``, default half of ``max_tokens``)
    by ``summariser`` instead of being dropped (``summariser=None`` drops them).

    >>> stm = ShortTermMemory(); stm.add("user", "I moved to Lisbon"); stm.context()
    """

    max_messages: int = STM_MAX_MESSAGES
    max_tokens: int = STM_MAX_TOKENS
    count_tokens: TokenCounter = field(default_factory=lambda: ByteTokenizer().count)
    summariser: Summariser | None = field(default_factory=ExtractiveSummariser)
    summary_max_tokens: int | None = None
    messages: deque = field(default_factory=deque)
    summary: str = ""
    summarized: int = 0  # how many messages the summary stands for

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_tokens < 1:
            raise ValueError("max_messages and max_tokens must be >= 1")
        if self.summary_max_tokens is None:
            self.summary_max_tokens = max(1, self.max_tokens // 2)

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.messages)

    def add(self, role: str, text: str) -> None:
        tokens = self.count_tokens(text)
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise TypeError(f"count_tokens must return an int >= 0, got {tokens!r}")
        self.messages.append(Message(role, text, tokens))
        evicted = []
        # Keep the newest message even when it alone is over budget.
        while len(self.messages) > 1 and (len(self.messages) > self.max_messages or self.tokens > self.max_tokens):
            evicted.append(self.messages.popleft())
        if evicted and self.summariser is not None:
            self.summary = self.summariser(evicted, self.summary, self.summary_max_tokens, self.count_tokens)
            self.summarized += len(evicted)

    def context(self) -> str:
        """The summary (if any), then the kept messages, ``role: text`` per line."""
        lines = [self.summary] if self.summary else []
        return "\n".join(lines + [f"{m.role}: {m.text}" for m in self.messages])

    def clear(self) -> None:
        self.messages.clear()
        self.summary, self.summarized = "", 0
