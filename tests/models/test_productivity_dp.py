"""DP-SGD fine-tuning: per-sample clipping bounds the update, noise has the stated scale,
frozen parts stay put, and the (epsilon, delta) comes from opacus's accountant."""

import pytest
import torch

from fastlstm.models import ActivityEncoder, ProductivityLSTM, synthetic_activity_log
from fastlstm.models.productivity_dp import dp_fine_tune
from fastlstm.models.productivity_training import ActivityData

opacus = pytest.importorskip("opacus", reason="DP fine-tuning needs opacus (pip install opacus, in the test extra)")


@pytest.fixture(scope="module")
def setup():
    log = synthetic_activity_log(days=2, seed=3)
    enc = ActivityEncoder().fit(log.events)
    return enc, ActivityData.from_synthetic(log, enc)


def _model(enc):
    torch.manual_seed(0)
    return ProductivityLSTM(enc.input_dim, 8, (8, 4), output_dim=5, attention_window=4, dropout=0.0,
                            attention_dropout=0.0)


def _trainable(model):
    return torch.cat([p.detach().flatten().clone() for n, p in model.named_parameters()
                      if not n.startswith(("embedding", "lstm"))])


def test_clipping_bounds_the_update_and_frozen_parts_stay(setup):
    enc, data = setup
    model = _model(enc)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(("embedding", "lstm"))}
    before = _trainable(model)
    C, lr = 1e-3, 1.0
    report = dp_fine_tune(model, data, length=16, sample_rate=1.0, noise_multiplier=0.0, max_grad_norm=C, lr=lr)
    step = (_trainable(model) - before).norm()
    assert report.steps == 1 and 0 < step <= lr * C * (1 + 1e-4)  # mean of clipped grads: norm <= C
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), n
    assert all(p.requires_grad for p in model.parameters())  # unfrozen after


def test_noise_has_the_stated_scale(setup):
    enc, data = setup
    a, b = _model(enc), _model(enc)
    sigma, C, lr = 2.0, 1e-3, 1.0
    quiet = dp_fine_tune(a, data, length=16, sample_rate=1.0, noise_multiplier=0.0, max_grad_norm=C, lr=lr)
    dp_fine_tune(b, data, length=16, sample_rate=1.0, noise_multiplier=sigma, max_grad_norm=C, lr=lr)
    diff = _trainable(b) - _trainable(a)
    expected = lr * sigma * C / quiet.windows
    assert 0.8 * expected < diff.std().item() < 1.25 * expected


def test_epsilon_is_opacus_accounting(setup):
    enc, data = setup
    report = dp_fine_tune(_model(enc), data, epochs=1, length=16, sample_rate=0.25, noise_multiplier=1.1, delta=1e-5)
    acc = opacus.accountants.RDPAccountant()
    for _ in range(report.steps):
        acc.step(noise_multiplier=1.1, sample_rate=0.25)
    assert report.steps == 4 and report.delta == 1e-5
    assert dp_fine_tune(_model(enc), data, length=16, sample_rate=0.5).delta == pytest.approx(0.1 / report.windows)
    assert report.epsilon == pytest.approx(acc.get_epsilon(report.delta))
    louder = dp_fine_tune(_model(enc), data, epochs=1, length=16, sample_rate=0.25, noise_multiplier=3.0, delta=1e-5)
    assert 0 < louder.epsilon < report.epsilon
