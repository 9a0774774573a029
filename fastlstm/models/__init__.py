"""Consumer models built on fastlstm's modules (see the design documents),
with the plain-PyTorch originals in :mod:`fastlstm.models.reference`."""

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

# productivity (issue 7)
from fastlstm.models.activity import (  # noqa: F401
    PATTERNS,
    ActivityEncoder,
    ActivityEvent,
    ActivityLogError,
    SyntheticLog,
    read_log,
    synthetic_activity_log,
)
from fastlstm.models.productivity import ProductivityLSTM, ProductivityPrediction  # noqa: F401
from fastlstm.models.streaming import StreamingProductivity  # noqa: F401
