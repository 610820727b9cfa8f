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


# ---- Fine-tuning optimizers: SGD, cosine and step schedules, backbone vs head ----------------

import optax  # noqa: E402

from cifar_jax.config import apply_override, training_changes, validate_config  # noqa: E402
from cifar_jax.optim import current_learning_rate, param_labels, schedules  # noqa: E402


def _tree(seed=0):
    """A tiny parameter tree shaped like a zoo model's: a head ("classifier") and a backbone."""
    rng = np.random.default_rng(seed)
    return {
        "conv1": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                  "bias": rng.normal(size=(4,)).astype(np.float32)},
        "res1": {"bn": {"scale": rng.normal(size=(4,)).astype(np.float32)}},
        "classifier": {"kernel": rng.normal(size=(4, 5)).astype(np.float32),
                       "bias": rng.normal(size=(5,)).astype(np.float32)},
    }


def _grads(params, n, seed=1, scale=0.02):
    rng = np.random.default_rng(seed)
    return [jax.tree.map(lambda p: rng.normal(scale=scale, size=p.shape).astype(np.float32), params)
            for _ in range(n)]


def _run(tx, params, grads):
    """Params after each update and the state's hyperparams before each (those it used)."""
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    trajectory, used = [], []
    for g in grads:
        updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
        used.append({k: float(v) for k, v in state.hyperparams.items()})
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory, used, state


def _torch_run(torch, params, grads, make, clip):
    """The same updates with a torch optimizer and scheduler (stepped every batch, as we do):
    params after each step, and each step's lr and momentum."""
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.array(p), requires_grad=True) for p in leaves]
    optimizer, scheduler = make(tensors)
    trajectory, used = [], []
    for g in grads:
        for t, gl in zip(tensors, jax.tree.leaves(g)):
            t.grad = torch.tensor(np.array(gl))
        if clip:
            torch.nn.utils.clip_grad_value_(tensors, clip)
        group = optimizer.param_groups[0]
        used.append({"learning_rate": group["lr"], "momentum": group.get("momentum")})
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append(jax.tree.unflatten(treedef, [t.detach().numpy().copy() for t in tensors]))
    return trajectory, used


def _assert_trajectories_close(ours, theirs, atol):
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x), y, rtol=0, atol=atol, err_msg=f"step {step}")


def _sgd_config(config, **changes):
    config.optimizer, config.schedule = "sgd", "cosine"
    config.learning_rate, config.weight_decay, config.grad_clip = 0.1, 0.05, 0.01
    config.num_epochs = 2
    for key, value in changes.items():
        config[key] = value
    return config


def _torch_warmup_cosine(torch, optimizer, total, warmup, start_factor):
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)
    if not warmup:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def _torch_warmup_step(torch, optimizer, milestones, gamma, warmup, start_factor):
    decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    if not warmup:
        return decay
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup)
    return torch.optim.lr_scheduler.ChainedScheduler([linear, decay])


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_with_l2_and_cosine_warmup_matches_torch_sgd(default_config, nesterov):
    torch = pytest.importorskip("torch")
    steps_per_epoch = 6  # 12 steps: 3 of warmup (0.5 epoch), 9 of cosine
    config = _sgd_config(default_config, nesterov=nesterov, warmup_epochs=0.5)
    params = _tree()
    grads = _grads(params, 12)
    grads[0]["conv1"]["bias"][0] = 3.0  # far past the clip: counts as 0.01
    ours, used, _ = _run(make_optimizer(config, steps_per_epoch), params, grads)

    def make(tensors):
        optimizer = torch.optim.SGD(tensors, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.05)
        return optimizer, _torch_warmup_cosine(torch, optimizer, 12, 3, config.warmup_start_factor)

    theirs, torch_used = _torch_run(torch, params, grads, make, clip=0.01)
    # float32: optax's linear warmup computes peak - (peak - start) * ..., so its lrs are off by
    # up to a float32 ulp of the peak (measured 2e-9, relative 2e-6 at the warmup's first step).
    np.testing.assert_allclose([u["learning_rate"] for u in used],
                               [u["learning_rate"] for u in torch_used], rtol=1e-6, atol=1e-7 * 0.1)
    assert all(u["momentum"] == pytest.approx(0.9) for u in used)
    # Both in float32 from the same values: measured max |difference| 1.2e-7 (one float32 ulp
    # of params of size 1-2, from a different order of the same operations); 1e-6 leaves room and
    # still fails for any semantic difference (e.g. nesterov off: ~1e-3, no clip: ~0.3).
    _assert_trajectories_close(ours, theirs, atol=1e-6)


def test_sgd_with_adamw_mode_is_decoupled_sgdw(default_config):
    """No torch SGDW exists: decoupled decay is p -= lr * (momentum buffer + wd * p)."""
    config = _sgd_config(default_config, weight_decay_mode="adamw", nesterov=False, grad_clip=0.0,
                         schedule="step", lr_decay_epochs=(1,))
    p = np.random.default_rng(0).normal(size=(5,)).astype(np.float32)
    grads = [{"w": g} for g in np.random.default_rng(1).normal(scale=0.02, size=(8, 5)).astype(np.float32)]
    ours, used, _ = _run(make_optimizer(config, 4), {"w": p}, grads)
    expected, buf, q = [], np.zeros(5), p.astype(np.float64)
    for g, u in zip(grads, used):
        buf = 0.9 * buf + g["w"]
        q = q - u["learning_rate"] * (buf + 0.05 * q)
        expected.append(q)
    np.testing.assert_allclose([np.asarray(t["w"]) for t in ours], expected, rtol=1e-5, atol=1e-7)
    assert [u["learning_rate"] for u in used] == pytest.approx([0.1] * 4 + [0.01] * 4)


@pytest.mark.parametrize("warmup_epochs", [0.0, 1.5])
def test_cosine_schedule_matches_torch_at_every_step(default_config, warmup_epochs):
    torch = pytest.importorskip("torch")
    config = _sgd_config(default_config, num_epochs=6, warmup_epochs=warmup_epochs, warmup_start_factor=0.1)
    steps_per_epoch, total = 7, 42
    warmup = round(warmup_epochs * steps_per_epoch)  # 0 or 10 (10.5 rounds to even)
    lr, momentum = schedules(config, steps_per_epoch)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = _torch_warmup_cosine(torch, optimizer, total, warmup, 0.1)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = np.asarray(jax.vmap(lr)(jnp.arange(total)))
    # float32 against torch's float64: measured max |error| 7e-9, one float32 ulp of the 0.1
    # peak (relative 1e-5 on the smallest, last lrs); atol is 1e-6 of the peak.
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * 0.1)
    assert momentum == 0.9
    assert ours.argmax() == warmup and ours[warmup] == pytest.approx(0.1)
    if warmup:
        assert ours[0] == pytest.approx(0.01)


@pytest.mark.parametrize("warmup_epochs", [0.0, 1.0])
def test_step_schedule_matches_torch_multisteplr_at_every_step(default_config, warmup_epochs):
    torch = pytest.importorskip("torch")
    config = _sgd_config(default_config, schedule="step", num_epochs=6, lr_decay_epochs=(2, 4),
                         lr_decay_factor=0.1, warmup_epochs=warmup_epochs, warmup_start_factor=0.25)
    steps_per_epoch, total = 5, 30
    warmup = int(warmup_epochs * steps_per_epoch)
    lr, _ = schedules(config, steps_per_epoch)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = _torch_warmup_step(torch, optimizer, [10, 20], 0.1, warmup, 0.25)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = np.asarray(jax.vmap(lr)(jnp.arange(total)))
    np.testing.assert_allclose(ours, expected, rtol=1e-6)  # float32 vs float64: measured 1.1e-7
    # The decays land on the first step of epochs 2 and 4.
    assert ours[9] == pytest.approx(0.1) and ours[10] == pytest.approx(0.01) and ours[20] == pytest.approx(0.001)


def test_onecycle_with_sgd_cycles_the_momentum_like_torch(default_config):
    torch = pytest.importorskip("torch")
    config = _sgd_config(default_config, schedule="onecycle", num_epochs=2, nesterov=True)
    steps_per_epoch, total = 6, 12
    params = _tree()
    grads = _grads(params, total, seed=3)
    ours, used, _ = _run(make_optimizer(config, steps_per_epoch), params, grads)

    def make(tensors):
        optimizer = torch.optim.SGD(tensors, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=0.1, epochs=2, steps_per_epoch=steps_per_epoch, pct_start=config.pct_start,
            div_factor=config.div_factor, final_div_factor=config.final_div_factor,
            base_momentum=config.beta1_min, max_momentum=config.beta1_max)
        return optimizer, scheduler

    theirs, torch_used = _torch_run(torch, params, grads, make, clip=0.01)
    for key in ("learning_rate", "momentum"):
        # float32 schedules: off by up to an ulp of the peak (measured 6e-9 for the lr)
        np.testing.assert_allclose([u[key] for u in used], [u[key] for u in torch_used], rtol=1e-6, atol=1e-8)
    assert used[0]["momentum"] == pytest.approx(0.95) and min(u["momentum"] for u in used) < 0.86
    _assert_trajectories_close(ours, theirs, atol=1e-6)  # measured 1.2e-7, as above


def _old_seed_optimizer(config, steps_per_epoch):
    """A copy of make_optimizer before the fine-tuning options (main at b6ad15f)."""
    mode = config.weight_decay_mode
    learning_rate, beta1 = one_cycle_schedules(config, config.num_epochs * steps_per_epoch)

    def chain(learning_rate, b1):
        clip = [optax.clip(config.grad_clip)] if config.grad_clip > 0 else []
        decay = [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay else []
        adam = [optax.scale_by_adam(b1=b1, b2=config.beta2, eps=config.adam_eps)]
        order = clip + decay + adam if mode == "l2" else clip + adam + decay
        return optax.chain(*order, optax.scale_by_learning_rate(learning_rate))

    return optax.inject_hyperparams(chain)(learning_rate=learning_rate, b1=beta1)


@pytest.mark.parametrize("mode", ["l2", "adamw"])
def test_default_adam_keeps_the_seed_state_structure_and_updates(default_config, mode):
    default_config.weight_decay_mode = mode
    params = _tree()
    grads = _grads(params, 4)
    new, old = make_optimizer(default_config, 196, head_key="classifier"), _old_seed_optimizer(default_config, 196)
    new_state, old_state = new.init(params), old.init(params)
    assert jax.tree.structure(new_state) == jax.tree.structure(old_state)  # old checkpoints restore
    assert sorted(new_state.hyperparams) == ["b1", "learning_rate"]
    ours, _, _ = _run(new, params, grads)
    before, _, _ = _run(old, params, grads)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(before)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_param_labels_mark_the_head_subtree():
    labels = param_labels(_tree(), "classifier")
    assert labels == {"conv1": {"kernel": "backbone", "bias": "backbone"}, "res1": {"bn": {"scale": "backbone"}},
                      "classifier": {"kernel": "head", "bias": "head"}}
    with pytest.raises(ConfigError, match="no top-level parameter 'fc'"):
        param_labels(_tree(), "fc")


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_freeze_backbone_leaves_it_exactly_unchanged_and_stateless(default_config, optimizer):
    default_config.optimizer = optimizer
    default_config.freeze_backbone = True
    default_config.num_epochs = 1
    params = _tree()
    tx = make_optimizer(default_config, 10, head_key="classifier")
    trajectory, used, state = _run(tx, params, _grads(params, 5))
    final = trajectory[-1]
    for key in ("conv1", "res1"):
        for a, b in zip(jax.tree.leaves(final[key]), jax.tree.leaves(params[key])):
            np.testing.assert_array_equal(np.asarray(a), b)
    for a, b in zip(jax.tree.leaves(final["classifier"]), jax.tree.leaves(params["classifier"])):
        assert np.abs(np.asarray(a) - b).min() > 0
    # Optimizer buffers exist for the head's 25 parameters only (Adam: mu and nu; SGD: the trace).
    sizes = [np.size(x) for x in jax.tree.leaves(state) if np.ndim(x) > 0]
    assert sum(sizes) == (2 if optimizer == "adam" else 1) * 25
    lr, _ = one_cycle_schedules(default_config, 10)
    assert float(current_learning_rate(state)) == pytest.approx(float(lr(4)))
    assert used[0]["learning_rate"] == pytest.approx(float(lr(0)))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_backbone_lr_mult_scales_the_backbone_updates_only(default_config, optimizer):
    """The lr is the chain's last factor, so (momentum, Adam's moments and coupled decay
    included) the backbone's update with mult m is m times its update with mult 1; with
    m = 0.25 (a power of two) the two are equal bit for bit, and so are the head's."""
    default_config.optimizer = optimizer
    default_config.num_epochs = 1
    params = _tree()
    grads = _grads(params, 4)
    base_tx = make_optimizer(default_config, 10, head_key="classifier")
    default_config.backbone_lr_mult = 0.25
    split_tx = make_optimizer(default_config, 10, head_key="classifier")

    def updates(tx):
        state, out, p = tx.init(params), [], jax.tree.map(jnp.asarray, params)
        for g in grads:  # the same params each time: compares updates, not trajectories
            u, state = tx.update(g, state, p)
            out.append(u)
        return out, state

    (base, base_state), (split, state) = updates(base_tx), updates(split_tx)
    for b, s in zip(base, split):
        for key in ("conv1", "res1"):
            for x, y in zip(jax.tree.leaves(b[key]), jax.tree.leaves(s[key])):
                np.testing.assert_array_equal(0.25 * np.asarray(x), np.asarray(y))
                assert np.abs(np.asarray(y)).max() > 0
        for x, y in zip(jax.tree.leaves(b["classifier"]), jax.tree.leaves(s["classifier"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(current_learning_rate(state)) == float(current_learning_rate(base_state))


def test_a_split_optimizer_needs_a_head_key(default_config):
    default_config.backbone_lr_mult = 0.1
    with pytest.raises(ConfigError, match="model resnet9 has no head to separate"):
        make_optimizer(default_config, 196)
    default_config.backbone_lr_mult, default_config.freeze_backbone = 1.0, True
    with pytest.raises(ConfigError, match="has no head to separate"):
        make_optimizer(default_config, 196)


@pytest.mark.parametrize("key, value, match", [
    ("optimizer", "rmsprop", "unknown optimizer 'rmsprop'"),
    ("schedule", "linear", "unknown schedule 'linear'"),
    ("momentum", 1.0, "momentum=1.0 must lie in"),
    ("momentum", -0.1, "momentum=-0.1 must lie in"),
    ("lr_decay_epochs", (20, 10), "lr_decay_epochs=.* increasing positive integers"),
    ("lr_decay_epochs", (0, 10), "lr_decay_epochs=.* increasing positive integers"),
    ("lr_decay_epochs", (10, 10), "lr_decay_epochs=.* increasing positive integers"),
    ("lr_decay_epochs", (10.0, 20.0), "lr_decay_epochs=.* increasing positive integers"),
    ("warmup_epochs", -1.0, "warmup_epochs=-1.0 must lie in"),
    ("warmup_epochs", 30.0, "warmup_epochs=30.0 must lie in"),
    ("warmup_epochs", 2.0, "warmup_epochs is for the cosine and step schedules"),
    ("warmup_start_factor", 0.0, "warmup_start_factor=0.0 must lie in"),
    ("lr_decay_factor", 0.0, "lr_decay_factor=0.0 must be positive"),
    ("backbone_lr_mult", 0.0, "backbone_lr_mult=0.0 must be positive"),
])
def test_bad_optimizer_keys_are_refused_with_one_line(default_config, key, value, match):
    with default_config.unlocked():
        default_config[key] = value
    with pytest.raises(ConfigError, match=match) as error:
        validate_config(default_config)
    assert "\n" not in str(error.value) and f"--config.{key}" in str(error.value)


def test_step_and_nesterov_checks_depend_on_the_choices(default_config):
    default_config.schedule = "step"
    default_config.lr_decay_epochs = (10, 30)
    with pytest.raises(ConfigError, match="at or past num_epochs=30"):
        validate_config(default_config)
    default_config.schedule = "cosine"
    validate_config(default_config)  # the decay epochs matter only to the step schedule
    default_config.optimizer, default_config.momentum = "sgd", 0.0
    with pytest.raises(ConfigError, match="nesterov needs a momentum"):
        validate_config(default_config)
    default_config.nesterov = False
    validate_config(default_config)


def test_lr_decay_epochs_override_takes_any_number_of_integers(default_config):
    for text, expected in [("(30, 60, 80)", (30, 60, 80)), ("5", (5,)), ("(5,)", (5,)), ("()", ())]:
        apply_override(default_config, "lr_decay_epochs", text)
        assert default_config.lr_decay_epochs == expected
        apply_override(default_config, "lr_decay_epochs", "(10, 20)")
    with pytest.raises(ConfigError, match="expected integers"):
        apply_override(default_config, "lr_decay_epochs", "(1.5, 3)")
    apply_override(default_config, "mean", "(0.5, 0.5, 0.5)")  # float tuples keep their length check
    with pytest.raises(ConfigError, match="3 comma-separated values"):
        apply_override(default_config, "mean", "(0.5, 0.5)")


def test_runs_saved_before_the_new_keys_resume_with_the_default_config(default_config):
    import json

    current = json.loads(default_config.to_json())
    saved = {k: v for k, v in current.items() if k not in ("optimizer", "schedule", "lr_decay_epochs",
                                                           "momentum", "freeze_backbone")}
    assert training_changes(saved, current) == []
    current["optimizer"] = "sgd"
    assert training_changes(saved, current) == ["optimizer"]


def test_sgd_config_is_kuangliu_recipe():
    from cifar_jax.config import load_config_file

    config = load_config_file(str(REPO / "configs" / "sgd.py"))
    validate_config(config)
    assert (config.optimizer, config.learning_rate, config.momentum, config.nesterov) == ("sgd", 0.1, 0.9, False)
    assert (config.weight_decay, config.schedule, config.num_epochs) == (5e-4, "cosine", 200)
    state = make_optimizer(config, 391).init({"w": jnp.zeros(3)})
    assert sorted(state.hyperparams) == ["learning_rate", "momentum"]
    assert float(current_learning_rate(state)) == pytest.approx(0.1)


def test_added_key_fallbacks_are_the_default_config_values(default_config):
    """A config without the keys added since the first runs (an older run's) must train as
    configs/default.py does."""
    from cifar_jax.config import KEYS_ADDED_SINCE_FIRST_RUNS

    assert {k: default_config[k] for k in KEYS_ADDED_SINCE_FIRST_RUNS} == KEYS_ADDED_SINCE_FIRST_RUNS


def test_a_config_saved_before_the_optimizer_keys_builds_the_seed_optimizer(default_config):
    import ml_collections
    from cifar_jax.config import complete_saved_config
    from cifar_jax.optim import OPTIMIZERS

    optimizer_keys = ("optimizer", "momentum", "nesterov", "schedule", "warmup_epochs", "warmup_start_factor",
                      "lr_decay_epochs", "lr_decay_factor", "backbone_lr_mult", "freeze_backbone")
    assert OPTIMIZERS  # the keys above are those cifar_jax.optim reads beyond the seed's
    saved = {k: v for k, v in default_config.items() if k not in optimizer_keys}
    old = ml_collections.ConfigDict(complete_saved_config(saved))
    validate_config(old)
    params = _tree()
    grads = _grads(params, 3)
    ours, _, state = _run(make_optimizer(old, 196), params, grads)
    seed, _, seed_state = _run(_old_seed_optimizer(default_config, 196), params, grads)
    assert jax.tree.structure(state) == jax.tree.structure(seed_state)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(seed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
