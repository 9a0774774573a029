"""Consumer models built on fastlstm's modules (see the design documents)."""

# memory chat (issue 8)
from fastlstm.models.chat import (  # noqa: F401
    ByteTokenizer,
    LSTMDecoder,
    LSTMEncoder,
    MemoryIndex,
    Seq2SeqLSTM,
    SessionState,
    SessionStore,
    ShortTermMemory,
)
