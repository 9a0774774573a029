"""Benchmark of the productivity model (issue 7): batch-1 inference at T=288 and
T=1440 and training throughput at batch 64, fastlstm against the document's
reference model in torch fp32, torch dynamic int8 and ONNX Runtime.

    PYTHONPATH=. python benchmarks/productivity.py [--threads 2] [--repeats 7] [--json out.json]

All peers run in this one process, interleaved, so their ratios are
comparable even on a busy machine; times are the minimum over repeats.
The reference is the document's code with ``hidden_dim=128, num_layers=2``
(uniform width; nn.LSTM cannot do 128 then 64); ``fastlstm same`` is
``ProductivityLSTM.from_reference`` of it (same outputs), ``fastlstm 128/64``
the architecture in words, dense and with a sliding attention window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import torch

INPUT_DIM, EMBED, OUTPUT = 35, 64, 5


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


class _Plain(torch.nn.Module):
    """forward(x) only: the exporter traces positional arguments."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _onnx(ref, T: int, path: str):
    x = torch.randn(1, T, INPUT_DIM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Plain(ref).eval(), (x,), path, input_names=["x"], dynamo=False, opset_version=17,
                          output_names=["pattern", "forecast", "anomaly", "attn"])


def _ort_session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _models():
    from fastlstm.models import ProductivityLSTM, reference

    torch.manual_seed(0)
    ref = reference.ProductivityLSTM(INPUT_DIM, EMBED, 128, 2, OUTPUT).eval()
    same = ProductivityLSTM.from_reference(ref).eval()
    same_sparse = ProductivityLSTM.from_reference(ref, attention_window=64).eval()
    words = ProductivityLSTM(INPUT_DIM, EMBED, (128, 64), output_dim=OUTPUT).eval()
    words_sparse = ProductivityLSTM(INPUT_DIM, EMBED, (128, 64), output_dim=OUTPUT, attention_window=64).eval()
    words_sparse.load_state_dict(words.state_dict())
    return ref, same, same_sparse, words, words_sparse


def _files(tmp: str, ref, same, same_sparse, words_sparse, lengths) -> dict[str, str]:
    """Every deployable artefact, written once: name -> path."""
    import fastlstm

    files = {}
    files["reference torch fp32 (state_dict)"] = os.path.join(tmp, "ref.pt")
    torch.save(ref.state_dict(), files["reference torch fp32 (state_dict)"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        ref_int8 = torch.ao.quantization.quantize_dynamic(ref, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
    files["reference torch dynamic int8 (state_dict)"] = os.path.join(tmp, "ref_int8.pt")
    torch.save(ref_int8.state_dict(), files["reference torch dynamic int8 (state_dict)"])
    for name, model, dtype in (("fastlstm runtime fp32 (same model)", same, "float32"),
                               ("fastlstm runtime int8 (same model)", same, "int8"),
                               ("fastlstm runtime int8 (same model, window 64)", same_sparse, "int8"),
                               ("fastlstm runtime int8 128/64 window 64", words_sparse, "int8")):
        files[name] = os.path.join(tmp, name.replace(" ", "_").replace("/", "-") + ".safetensors")
        fastlstm.export(model, files[name], dtype=dtype)
    for T in lengths:  # the legacy exporter bakes T into the attention's reshapes: one file per length
        try:
            fp32 = files[f"reference ORT fp32 T={T}"] = os.path.join(tmp, f"ref_{T}.onnx")
            _onnx(ref, T, fp32)
            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8 = files[f"reference ORT int8 T={T}"] = os.path.join(tmp, f"ref_{T}_int8.onnx")
            quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
        except Exception as e:  # reported; the peer is then missing from the tables
            print(f"ONNX export/quantisation failed: {type(e).__name__}: {e}"[:300])
    files = {k: v for k, v in files.items() if os.path.exists(v)}
    return files, ref_int8


def inference(threads: int, repeats: int, tmp: str, lengths=(288, 1440)) -> tuple[list[dict], dict]:
    import fastlstm.runtime as rt

    rt.set_num_threads(threads)
    ref, same, same_sparse, words, words_sparse = _models()
    files, ref_int8 = _files(tmp, ref, same, same_sparse, words_sparse, lengths)
    runtimes = {k: rt.load(v) for k, v in files.items() if k.startswith("fastlstm runtime")}
    sessions = {k: _ort_session(v, threads) for k, v in files.items() if "ORT" in k}
    rows = []
    for T in lengths:
        x = torch.randn(1, T, INPUT_DIM)
        xn = x[0].numpy()
        peers = {
            "reference torch fp32": lambda: ref(x),
            "reference torch dynamic int8": lambda: ref_int8(x),
            "fastlstm fp32 (same model)": lambda: same(x),
            "fastlstm fp32 (same model, window 64)": lambda: same_sparse(x),
            "fastlstm fp32 128/64 dense": lambda: words(x),
            "fastlstm fp32 128/64 window 64": lambda: words_sparse(x),
        }
        for name, model in runtimes.items():
            peers[name] = lambda model=model: model(xn)
        ort_now = {k.rsplit(" T=", 1)[0]: v for k, v in sessions.items() if k.endswith(f" T={T}")}
        for name, sess in ort_now.items():
            peers[name] = lambda sess=sess: sess.run(None, {"x": x.numpy()})
        notes = {}
        with torch.no_grad():
            expected = ref(x)
            notes["fastlstm (same model) max |diff| vs reference"] = max(
                (a - b).abs().max().item() for a, b in zip(same(x), expected))
            for name, sess in ort_now.items():
                notes[f"{name} pattern max |diff| vs torch"] = float(abs(sess.run(None, {"x": x.numpy()})[0] - expected[0].numpy()).max())
            for name, model in runtimes.items():
                if "same" in name and "window" not in name:
                    notes[f"{name} pattern max |diff| vs torch"] = float(abs(model(xn)[0] - expected[0][0].numpy()).max())
        times = {name: float("inf") for name in peers}
        with torch.no_grad():
            for fn in peers.values():
                fn()
            for _ in range(repeats):  # interleaved so load spikes hit every peer alike
                for name, fn in peers.items():
                    time.sleep(0.2)  # let the previous peer's spin-waiting threads (OpenMP, ORT) go idle
                    t = time.perf_counter()
                    fn()
                    times[name] = min(times[name], time.perf_counter() - t)
        rows.append({"T": T, "ms": {k: v * 1e3 for k, v in times.items()}, "notes": notes})
    return rows, files


_RSS_CODE = {
    "runtime": "import fastlstm.runtime as rt\nrt.set_num_threads({threads})\nm = rt.load({path!r})\n"
               "x = np.random.randn({T}, {F}).astype(np.float32)\nm(x)",
    "ort": "import onnxruntime as ort\no = ort.SessionOptions(); o.intra_op_num_threads = {threads}\n"
           "s = ort.InferenceSession({path!r}, o, providers=['CPUExecutionProvider'])\n"
           "s.run(None, {{'x': np.random.randn(1, {T}, {F}).astype(np.float32)}})",
    "torch": "import torch\ntorch.set_num_threads({threads})\nfrom fastlstm.models import reference\n"
             "m = reference.ProductivityLSTM({F}, {E}, 128, 2, {C}).eval()\nm.load_state_dict(torch.load({path!r}))\n"
             "with torch.no_grad(): m(torch.randn(1, {T}, {F}))",
}


def peak_rss(files: dict, threads: int, T: int = 1440) -> dict:
    """Fresh-process peak RSS (MB) of loading each artefact and one inference at T."""
    import subprocess

    out = {}
    for name, path in files.items():
        kind = "runtime" if "runtime" in name else "ort" if "ORT" in name else "torch" if name.startswith(
            "reference torch fp32") else None
        if kind is None or ("ORT" in name and not name.endswith(f"T={T}")):
            continue
        code = ("import sys\nimport numpy as np\n"
                + _RSS_CODE[kind].format(path=path, T=T, F=INPUT_DIM, E=EMBED, C=OUTPUT, threads=threads)
                # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
                + "\nprint([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024)\n"
                + "print('torch' in sys.modules)")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        if r.returncode:
            out[name] = {"error": r.stderr.strip().splitlines()[-1][:200]}
            continue
        rss, torch_loaded = r.stdout.split()[-2:]
        out[name] = {"peak_rss_mb": float(rss), "imports_torch": torch_loaded == "True"}
    return out


def training(threads: int, repeats: int, T: int = 288, batch: int = 64) -> dict:
    from fastlstm.models import ProductivityLSTM, reference
    from fastlstm.models.productivity_training import multitask_loss

    torch.manual_seed(0)
    ref = reference.ProductivityLSTM(INPUT_DIM, EMBED, 128, 2, OUTPUT)
    models = {"reference torch fp32": ref, "fastlstm fp32 (same model)": ProductivityLSTM.from_reference(ref),
              "fastlstm fp32 128/64 dense": ProductivityLSTM(INPUT_DIM, EMBED, (128, 64), output_dim=OUTPUT)}
    x = torch.randn(batch, T, INPUT_DIM)
    pattern = torch.randint(0, OUTPUT, (batch, T))
    anomaly = (torch.rand(batch, T) < 0.02).float()
    nxt = torch.randn(batch, INPUT_DIM)
    steps = {}
    for name, model in models.items():
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            loss, _ = multitask_loss(model(x, need_weights=False), pattern, nxt, anomaly)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step
    times = {name: float("inf") for name in steps}
    for fn in steps.values():
        fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            time.sleep(0.2)
            t = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t)
    return {"T": T, "batch": batch, "seq_per_s": {k: batch / v for k, v in times.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-repeats", type=int, default=3)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp()
    rows, files = inference(args.threads, args.repeats, tmp)
    result = {"threads": args.threads, "inference": rows,
              "file_size_kb": {k: os.path.getsize(v) / 1024 for k, v in files.items()}}
    for row in rows:
        base = row["ms"]["reference torch fp32"]
        ort = row["ms"].get("reference ORT fp32")
        ort8 = row["ms"].get("reference ORT int8")
        print(f"\nT={row['T']} batch 1, {args.threads} threads, min of {args.repeats}")
        print(f"{'peer':40s} {'ms':>9s} {'x torch fp32':>13s} {'x ORT fp32':>11s} {'x ORT int8':>11s}")
        for name, ms in row["ms"].items():
            r1 = ms / ort if ort else float("nan")
            r2 = ms / ort8 if ort8 else float("nan")
            print(f"{name:40s} {ms:9.2f} {ms / base:13.2f} {r1:11.2f} {r2:11.2f}")
        for k, v in row["notes"].items():
            print(f"  {k}: {v:.2e}")
    print("\nfile size on disk")
    for k, kb in result["file_size_kb"].items():
        print(f"{k:44s} {kb:9.1f} KB")
    if not args.skip_rss:
        result["peak_rss"] = peak_rss(files, args.threads)
        print("\nfresh-process peak RSS, load + one inference at T=1440")
        for k, v in result["peak_rss"].items():
            print(f"{k:44s} " + (f"{v['peak_rss_mb']:7.1f} MB  torch imported: {v['imports_torch']}" if "error" not in v
                                 else f"error: {v['error']}"))
    if not args.skip_training:
        result["training"] = training(args.threads, args.train_repeats)
        tr = result["training"]
        base = tr["seq_per_s"]["reference torch fp32"]
        print(f"\ntraining, batch {tr['batch']}, T={tr['T']} (fwd + bwd + Adam)")
        for name, sps in tr["seq_per_s"].items():
            print(f"{name:34s} {sps:9.1f} seq/s {sps / base:6.2f}x reference")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
