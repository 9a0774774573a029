"""The memory-chat core on fastlstm: byte tokenizer, LSTM encoder (memory
vectors) and attention decoder, session state, short- and long-term memory,
and a training recipe that needs no pretrained weights. See docs/memory_chat.md.
"""

from fastlstm.models.chat.memory import (
    LTM_SIMILARITY_THRESHOLD,
    LTM_TOP_K,
    STM_MAX_MESSAGES,
    STM_MAX_TOKENS,
    Hit,
    MemoryIndex,
    SessionState,
    SessionStore,
    ShortTermMemory,
)
from fastlstm.models.chat.model import LSTMDecoder, LSTMEncoder, Seq2SeqLSTM
from fastlstm.models.chat.tokenizer import ByteTokenizer
from fastlstm.models.chat.training import TrainConfig, synthetic_corpus, train

__all__ = [
    "LTM_SIMILARITY_THRESHOLD", "LTM_TOP_K", "STM_MAX_MESSAGES", "STM_MAX_TOKENS",
    "ByteTokenizer", "Hit", "LSTMDecoder", "LSTMEncoder", "MemoryIndex", "Seq2SeqLSTM",
    "SessionState", "SessionStore", "ShortTermMemory", "TrainConfig", "synthetic_corpus", "train",
]
