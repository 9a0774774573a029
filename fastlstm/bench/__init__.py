"""``fastlstm bench``: benchmarks that check before they time.

Modules: ``core`` (cases, measurements, the timing method, sgemm peak),
``shapes`` (shapes, flop counts), ``suites/`` (what is measured), ``peers``
(ONNX export and the ONNX Runtime worker process), ``runner`` (check, time,
progress), ``report`` (JSON schema, tables, markdown, comparison, chart),
``cli`` (the command).
"""
