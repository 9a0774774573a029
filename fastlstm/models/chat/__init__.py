"""The memory-chat core on fastlstm: byte tokenizer, LSTM encoder (memory vectors) and
attention decoder, session state, short-term memory with a text summary, long-term
memory stores (SQLite + sqlite-vec, PostgreSQL), entity extraction, the
memory-augmented chat service and a training recipe that needs no pretrained
weights. See docs/memory_chat.md.

The stores, NER and the service import their optional dependencies (the ``chat``
extra) only when used.
"""

from fastlstm.models.chat.ltm import LongTermMemoryStore, Memory, SQLiteVecStore
from fastlstm.models.chat.memory import (
    LTM_SIMILARITY_THRESHOLD,
    LTM_TOP_K,
    Hit,
    MemoryIndex,
    SessionState,
    SessionStore,
)
from fastlstm.models.chat.model import LSTMDecoder, LSTMEncoder, Seq2SeqLSTM
from fastlstm.models.chat.ner import SpacyNER
from fastlstm.models.chat.service import ChatConfig, ChatTurn, MemoryAugmentedChat, no_language_model
from fastlstm.models.chat.stm import (
    STM_MAX_MESSAGES,
    STM_MAX_TOKENS,
    ExtractiveSummariser,
    ShortTermMemory,
    token_counter,
)
from fastlstm.models.chat.tokenizer import ByteTokenizer
from fastlstm.models.chat.training import TrainConfig, synthetic_corpus, train

__all__ = [
    "LTM_SIMILARITY_THRESHOLD", "LTM_TOP_K", "STM_MAX_MESSAGES", "STM_MAX_TOKENS",
    "ByteTokenizer", "ChatConfig", "ChatTurn", "ExtractiveSummariser", "Hit", "LSTMDecoder", "LSTMEncoder",
    "LongTermMemoryStore", "Memory", "MemoryAugmentedChat", "MemoryIndex", "SQLiteVecStore", "Seq2SeqLSTM",
    "SessionState", "SessionStore", "ShortTermMemory", "SpacyNER", "TrainConfig", "no_language_model",
    "synthetic_corpus", "token_counter", "train",
]
