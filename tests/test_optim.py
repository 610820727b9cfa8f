import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.config import load_config_file
from cifar_jax.errors import ConfigError
from cifar_jax.optim import make_optimizer, one_cycle_schedules
from tests.conftest import REPO


@pytest.fixture
def default_config():
    return load_config_file(str(REPO / "configs" / "default.py"))


def torch_one_cycle(step, total, max_lr, pct_start=0.3, div=25.0, final_div=1e4, b_max=0.95, b_min=0.85):
    """torch.optim.lr_scheduler.OneCycleLR's get_lr (cos anneal, two phases) written out."""
    initial = max_lr / div
    phases = [
        (float(pct_start * total) - 1, initial, max_lr, b_max, b_min),
        (float(total) - 1, max_lr, initial / final_div, b_min, b_max),
    ]
    start_step = 0.0
    for i, (end_step, lr0, lr1, m0, m1) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            anneal = lambda a, b: b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
            return anneal(lr0, lr1), anneal(m0, m1)
        start_step = end_step


def test_one_cycle_matches_torch_at_every_step_of_the_seed_schedule(default_config):
    total = 30 * 196
    lr, beta1 = one_cycle_schedules(default_config, total)
    steps = jnp.arange(total)
    ours_lr = np.asarray(jax.vmap(lr)(steps))
    ours_b1 = np.asarray(jax.vmap(beta1)(steps))
    expected = np.array([torch_one_cycle(s, total, 1e-3) for s in range(total)])
    # float32 arithmetic: absolute error relative to the peak lr.
    np.testing.assert_allclose(ours_lr, expected[:, 0], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours_b1, expected[:, 1], atol=1e-6)
    assert ours_lr[0] == pytest.approx(4e-5) and ours_lr.argmax() == 1763
    assert ours_b1[0] == pytest.approx(0.95) and ours_b1[1763] == pytest.approx(0.85)
    assert ours_b1[-1] == pytest.approx(0.95) and ours_lr[-1] == pytest.approx(4e-9)
    # The seed's log: "Epoch [0], last_lr: 0.00007" is the lr of the epoch's last step.
    assert round(float(ours_lr[195]), 5) == 0.00007


def test_schedule_too_short_is_a_config_error(default_config):
    with pytest.raises(ConfigError, match="num_epochs"):
        one_cycle_schedules(default_config, 3)


def _adam_reference(p, grads, config, mode, lrs, b1s):
    """Adam with torch semantics in numpy: clip, then coupled L2 (or decoupled decay)."""
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr, b1) in enumerate(zip(grads, lrs, b1s), start=1):
        g = np.clip(g, -config.grad_clip, config.grad_clip)
        if mode == "l2":
            g = g + config.weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = config.beta2 * v + (1 - config.beta2) * g * g
        step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - config.beta2**t)) + config.adam_eps)
        if mode == "adamw":
            step = step + config.weight_decay * p
        p = p - lr * step
    return p


@pytest.mark.parametrize("mode", ["l2", "adamw"])
def test_optimizer_chain_matches_torch_adam_semantics(default_config, mode):
    config = default_config
    config.weight_decay_mode = mode
    config.weight_decay = 0.1  # large enough that coupled vs decoupled differ visibly
    config.num_epochs, steps_per_epoch = 1, 10
    rng = np.random.default_rng(0)
    p = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(scale=0.02, size=(5,)).astype(np.float32) for _ in range(6)]
    grads[0][0] = 5.0  # far past the clip: must count as 0.01, not 5
    tx = make_optimizer(config, steps_per_epoch)
    params = {"w": jnp.asarray(p)}
    state = tx.init(params)
    lrs, b1s = [], []
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        lrs.append(float(state.hyperparams["learning_rate"]))
        b1s.append(float(state.hyperparams["b1"]))
        params = jax.tree.map(lambda a, b: a + b, params, updates)
    lr_fn, b1_fn = one_cycle_schedules(config, steps_per_epoch)
    np.testing.assert_allclose(lrs, [float(lr_fn(s)) for s in range(6)], rtol=1e-6)
    np.testing.assert_allclose(b1s, [float(b1_fn(s)) for s in range(6)], rtol=1e-6)
    expected = _adam_reference(p.astype(np.float64), grads, config, mode, lrs, b1s)
    np.testing.assert_allclose(np.asarray(params["w"]), expected, rtol=2e-5, atol=1e-7)
    other = _adam_reference(p.astype(np.float64), grads, config, "adamw" if mode == "l2" else "l2", lrs, b1s)
    assert not np.allclose(np.asarray(params["w"]), other, rtol=2e-5, atol=1e-7)


def test_unknown_weight_decay_mode_is_refused(default_config):
    default_config.weight_decay_mode = "sgd"
    with pytest.raises(ConfigError, match="weight_decay_mode"):
        make_optimizer(default_config, 196)
