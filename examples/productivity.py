"""The productivity model end to end, in code (what ``fastlstm demo productivity`` does).

    PYTHONPATH=. python examples/productivity.py [out_dir]

1. a synthetic activity log (or your own CSV: timestamp,app,duration,score),
2. features with ActivityEncoder, 3. multi-task training with a curriculum,
4. readable predictions, 5. streaming inference as events arrive,
6. the pattern heatmap and anomaly PNGs.
"""

import sys

import torch

from fastlstm.demos.productivity import anomaly_plot, heatmap
from fastlstm.models import ActivityEncoder, ProductivityLSTM, StreamingProductivity, synthetic_activity_log
from fastlstm.models.productivity_training import ActivityData, fine_tune, train

out = sys.argv[1] if len(sys.argv) > 1 else "."
torch.manual_seed(0)

# 1-2. A month of one user's activity, encoded.
log = synthetic_activity_log(days=28, seed=0)           # or: events = fastlstm.models.read_log("activity.csv")
encoder = ActivityEncoder().fit(log.events)
data = ActivityData.from_synthetic(log, encoder)
print(f"{len(log.events)} events -> features {tuple(data.features.shape)}; planted: {log.planted}")

# 3. The document's architecture: Bi-LSTM 128 then 64, 4-head attention (sliding window of 32 events).
model = ProductivityLSTM(encoder.input_dim, embedding_dim=64, hidden_dim=(128, 64), output_dim=5,
                         attention_window=32)
model.encoder = encoder
history = train(model, data, epochs=9, batch_size=32, lr=3e-3, curriculum=(16, 32, 64), max_seconds=40,
                loss_weights=(1.0, 1.0, 10.0), focal_alpha=0.75)  # anomalies are rare: weight them up
print("last epoch:", {k: round(v, 4) for k, v in history[-1].items()})

# Fine-tune attention and heads on one more week of the same user (LSTM frozen).
week = synthetic_activity_log(days=7, seed=1)
fine_tune(model, ActivityData.from_synthetic(week, encoder), epochs=1, curriculum=(32,), max_seconds=10)

# 4. Readable predictions for one day.
day = log.days()[3]
pred = model.predict(day.events, threshold=0.35)
print("first steps:", list(zip([t.strftime("%H:%M") for t in pred.timestamps[:4]], pred.patterns[:4])))
print(f"forecast productivity: {pred.forecast:.2f}; flagged spans: "
      f"{[(s.start_time.strftime('%H:%M'), s.end_time.strftime('%H:%M')) for s in pred.anomalies]}")

# 5. Streaming: append events as they arrive; only a trailing window is recomputed.
stream = StreamingProductivity(model, window=64)
for i in range(0, len(day.events), 5):
    result = stream.append("alice", day.events[i:i + 5])
print(f"streamed {len(day.events)} events; last update recomputed steps {result.recomputed_from}..")

# 6. Pictures of the whole month.
full = model.predict(log.events)
heatmap(full, f"{out}/patterns_heatmap.png")
anomaly_plot(full, log.anomalies, f"{out}/anomalies.png")
print(f"wrote {out}/patterns_heatmap.png and {out}/anomalies.png")
