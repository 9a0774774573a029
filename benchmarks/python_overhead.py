"""Python and dispatch overhead of fp32 inference at S1 (issue #3's < 5% target):
the module's median time, and its median time with the one kernel call it makes
(``_C.lstm_stack_fwd``) replaced by a no-op, i.e. everything outside the kernel
(checks, weight-plan lookup, allocation, layout).

    PYTHONPATH=. python benchmarks/python_overhead.py
"""
import torch, time, types, fastlstm
torch.set_num_threads(2)
m = fastlstm.LSTM(32, 128, num_layers=2, bidirectional=True, batch_first=True).eval()
x = torch.randn(1, 288, 32)
real = fastlstm._ext._C
stub = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
stub.lstm_stack_fwd = lambda *a: None
def t(f, n=400):
    ts = []
    for _ in range(n):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    ts.sort(); return ts[n // 2] * 1e3
with torch.no_grad():
    for _ in range(3):
        full = t(lambda: m(x))
        fastlstm._ext._C = stub
        outside = t(lambda: m(x))
        fastlstm._ext._C = real
        print("module %.3f ms, outside the kernel %.3f ms = %.1f%%" % (full, outside, 100 * outside / full))
