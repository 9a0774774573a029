"""DistributedDataParallel (gloo, CPU, 2 processes on the loopback address)
training a model built on fastlstm.LSTM matches single-process training on
the combined batch. The test starts both processes itself and cleans up."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

import fastlstm

STEPS, BATCH, T = 5, 8, 6

_COMMON = textwrap.dedent(
    """
    import torch
    from torch import nn
    import fastlstm

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = fastlstm.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    def data(steps, batch, T):
        g = torch.Generator().manual_seed(1)
        return [(torch.randn(batch, T, 4, generator=g), torch.randn(batch, 2, generator=g)) for _ in range(steps)]

    def make():
        torch.manual_seed(0)
        model = Model()
        return model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    """
)

_WORKER = _COMMON + textwrap.dedent(
    """
    import sys, datetime
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, world, port, out_path, steps, batch, T = sys.argv[1:8]
    rank, world, steps, batch, T = int(rank), int(world), int(steps), int(batch), int(T)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        model, opt = make()
        ddp = DDP(model)
        share = batch // world
        for x, y in data(steps, batch, T):
            x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
            opt.zero_grad()
            nn.functional.mse_loss(ddp(x), y).backward()
            opt.step()
        if rank == 0:
            torch.save(model.state_dict(), out_path)
    finally:
        dist.destroy_process_group()
    # Skip interpreter finalisation: torch's gloo run-loop thread ("pt_gloo_runloop")
    # sometimes aborts while being unwound at exit (std::terminate in its forced
    # unwind, seen in gdb in ~1 of 15 runs, after all the work above is done).
    import os
    sys.stdout.flush()
    os._exit(0)
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_ddp_two_processes_matches_single_process(tmp_path):
    out_path = tmp_path / "ddp.pt"
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(fastlstm.__file__).resolve().parent.parent), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(rank), "2", str(port), str(out_path), str(STEPS),
                          str(BATCH), str(T)], env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:  # never leave a worker behind
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-3000:]}"

    scope: dict = {}
    exec(_COMMON, scope)  # the same model, optimiser and data, in this process
    model, opt = scope["make"]()
    for x, y in scope["data"](STEPS, BATCH, T):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    ddp_state = torch.load(out_path, weights_only=True)
    single = model.state_dict()
    assert ddp_state.keys() == single.keys()
    moved = 0.0
    for name, value in single.items():
        torch.testing.assert_close(ddp_state[name], value, atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
        moved = max(moved, (value - scope["make"]()[0].state_dict()[name]).abs().max().item())
    assert moved > 1e-3  # training really changed the weights
