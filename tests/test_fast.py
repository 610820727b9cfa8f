"""The record-class recipe, configs/fast.py (airbench94, docs/fast.md): each of its pieces
against its formula, on small arrays (the whitening conv, dirac init, label smoothing, the
alternating flip, test-time augmentation, lookahead, Muon, the parameter groups and the
triangle schedule), the config itself, and one tiny training of the whole recipe."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_jax import compiled
from cifar_jax.augment import alternating_flips, augment, tta_logits
from cifar_jax.config import load_config_file, validate_config
from cifar_jax.models.airbench import dirac, whitening_kernel
from cifar_jax.optim import group_labels, lookahead, make_optimizer, schedules
from cifar_jax.steps import create_train_state, cross_entropy, init_from_data, train_step
from tests.conftest import REPO


# These small programs need none of XLA:CPU's optimisations, which take most of their compile
# time (eagerly dispatched random numbers alone cost seconds): each test compiles one with these.
QUICK = {**compiled.CPU_OPTIONS, "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def quick(fn, **jit_kwargs):
    return jax.jit(fn, compiler_options=QUICK, **jit_kwargs)


@pytest.fixture
def fast_config():
    return load_config_file(str(REPO / "configs" / "fast.py"))


def _tiny_config():
    config = load_config_file(str(REPO / "configs" / "fast.py"))
    config.width, config.batch_size, config.num_epochs = 1 / 16, 16, 2
    return config


@pytest.fixture(scope="module")
def tiny():
    """The recipe at width 1/16 (4/16/16 channels), batch 16, 2 epochs of 4 steps: a fresh
    train state, the same after init_from_data on 64 random images, and those images."""
    config = _tiny_config()
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    fresh = create_train_state(jax.random.key(0), config, steps_per_epoch=4)
    return fresh, init_from_data(fresh, config, images), images


def _conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _smooth_images(n=64, size=16, seed=0):
    """Images with correlated neighbouring pixels and channels, as natural images have."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n, size // 2, size // 2, 3)) @ np.array([[1, .8, .6], [0, .6, .5], [0, 0, .4]])
    return (np.repeat(np.repeat(coarse, 2, 1), 2, 2) + 0.3 * rng.normal(size=(n, size, size, 3))).astype(np.float32)


def test_the_whitening_conv_whitens_the_training_patches():
    images = _smooth_images()
    kernel = np.asarray(whitening_kernel(jnp.asarray(images), eps=0.0))
    assert kernel.shape == (2, 2, 3, 24)
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])
    out = np.asarray(_conv(jnp.asarray(images), jnp.asarray(kernel[..., :12]))).reshape(-1, 12).astype(np.float64)
    covariance = out.T @ out / len(out)  # uncentred, as airbench's patch covariance
    np.testing.assert_allclose(covariance, np.eye(12), atol=2e-3)
    # With airbench's eps, filter k's variance is lambda_k / (lambda_k + eps): just below 1.
    out = np.asarray(_conv(jnp.asarray(images), whitening_kernel(jnp.asarray(images))[..., :12])).reshape(-1, 12)
    variances = np.diag(out.T.astype(np.float64) @ out / len(out))
    assert np.all(variances < 1) and np.all(variances > 0.9), variances


def test_dirac_init_makes_a_fresh_conv_an_identity_on_its_first_channels(tiny):
    fresh = tiny[0].params
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float32)
    # The model's 3x3 convs at width 1/16: 24 -> 4, 4 -> 4, 4 -> 16 and 16 -> 16 channels.
    for group, conv in (("group1", "Conv_0"), ("group1", "Conv_1"), ("group2", "Conv_0"), ("group3", "Conv_1")):
        kernel = np.asarray(fresh[group][conv]["kernel"])
        cin, cout = kernel.shape[2:]
        y = np.asarray(jax.lax.conv_general_dilated(np.resize(x, (2, 8, 8, cin)), kernel, (1, 1), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC")))
        n = min(cin, cout)
        np.testing.assert_allclose(y[..., :n], np.resize(x, (2, 8, 8, cin))[..., :n], atol=1e-6)
        if cout > cin:  # the other filters keep PyTorch's random init, within its bound
            rest = kernel[..., cin:]
            assert 0 < np.abs(rest).max() <= 1 / math.sqrt(cin * 9)
    kernel = np.asarray(quick(dirac(24 * 9), static_argnums=1)(jax.random.key(1), (3, 3, 24, 4)))
    np.testing.assert_array_equal(kernel[1, 1, :4, :4], np.eye(4))
    assert np.count_nonzero(kernel) == 4


def test_label_smoothing_is_torchs_and_optaxs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 10)).astype(np.float32)
    labels = np.array([0, 3, 9, 3, 1])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    # torch's CrossEntropyLoss(label_smoothing=a): (1 - a) * CE + a * mean over classes of -log p.
    expected = 0.8 * -log_p[np.arange(5), labels] + 0.2 * -log_p.mean(-1)

    def losses(logits, labels):
        targets = optax.smooth_labels(jax.nn.one_hot(labels, 10), 0.2)
        return (cross_entropy(logits, labels, 0.2), optax.softmax_cross_entropy(logits, targets),
                cross_entropy(logits, labels), optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    smoothed, optax_smoothed, plain, optax_plain = map(np.asarray, quick(losses)(logits, labels))
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)
    np.testing.assert_allclose(smoothed, optax_smoothed, rtol=1e-6)
    np.testing.assert_array_equal(plain, optax_plain)


def test_alternating_flip_flips_exactly_the_images_not_flipped_the_epoch_before():
    flips_of = quick(alternating_flips)
    key, indices = jax.random.key(3), jnp.arange(2000)
    epochs = [np.asarray(flips_of(key, indices, epoch)) for epoch in range(4)]
    assert abs(epochs[0].mean() - 0.5) < 0.056  # 5 standard deviations of 2000 fair coins
    for before, after in zip(epochs, epochs[1:]):
        np.testing.assert_array_equal(after, ~before)
    # A function of the index alone: a batch in another order flips the same images.
    order = np.random.default_rng(0).permutation(2000)
    np.testing.assert_array_equal(np.asarray(flips_of(key, jnp.asarray(order), 5)), ~epochs[0][order])
    # augment applies the flips it is given (here without the crop: padding 0).
    images = np.random.default_rng(1).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    flips = np.array([True, False, True, True, False, False])
    out = np.asarray(quick(augment, static_argnums=2)(jax.random.key(0), images, 0, flips))
    np.testing.assert_array_equal(out, np.where(flips[:, None, None, None], images[:, :, ::-1], images))


def test_tta_logits_are_the_mean_of_the_hand_made_views():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    weights = rng.normal(size=(8 * 8 * 3, 5)).astype(np.float32)
    model = lambda x: jnp.asarray(x).reshape(len(x), -1) @ weights  # noqa: E731 (sees every pixel's place)
    mirror = lambda x: x[:, :, ::-1]  # noqa: E731
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    down_right, up_left = padded[:, :8, :8], padded[:, 2:, 2:]
    pair = lambda x: 0.5 * model(x) + 0.5 * model(mirror(x))  # noqa: E731
    expected = {0: model(images), 1: pair(images),
                2: 0.5 * pair(images) + 0.5 * (pair(down_right) + pair(up_left)) / 2}
    for level, want in expected.items():
        got = quick(lambda x, level=level: tta_logits(model, x, level))(images)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_lookahead_matches_airbenchs_update():
    every, decay, total, lr = 2, 0.9, 7, 0.1
    tx = optax.chain(optax.sgd(lr), lookahead(every, decay, total))
    rng = np.random.default_rng(0)
    p = rng.normal(size=4).astype(np.float32)
    grads = rng.normal(size=(total, 4)).astype(np.float32)
    params = {"w": jnp.asarray(p)}
    state = tx.init(params)

    @quick
    def step_fn(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    fast, slow = p.astype(np.float64), p.astype(np.float64)
    for step in range(1, total + 1):  # airbench's loop, with plain SGD as its optimizer
        params, state = step_fn({"w": grads[step - 1]}, state, params)
        fast = fast - lr * grads[step - 1]
        if step % every == 0:
            d = decay**every * (step / total) ** 3
            slow = slow + (1 - d) * (fast - slow)
            fast = slow.copy()
        if step == total:
            fast = slow.copy()
        np.testing.assert_allclose(np.asarray(params["w"]), fast, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fast, p - lr * grads.sum(0))  # it did something


def test_muon_orthogonalises_the_conv_kernels_updates(fast_config):
    config = fast_config
    config.optimizer, config.schedule, config.lookahead_every = "muon", "cosine", 0
    config.frozen_params, config.whiten_bias_epochs, config.bn_bias_lr_mult = "", 0, 1.0
    config.weight_decay = 0.0
    rng = np.random.default_rng(0)
    params = {"conv": jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32),
              "classifier": {"kernel": jnp.asarray(rng.normal(size=(16, 10)), jnp.float32)}}
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    tx = make_optimizer(config, steps_per_epoch=10, head_key="classifier")
    updates, _ = quick(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    matrix = np.asarray(updates["conv"]).reshape(72, 16) / -config.muon_lr
    singular = np.linalg.svd(matrix, compute_uv=False)
    assert np.all(singular > 0.5) and np.all(singular < 1.5), singular  # Newton-Schulz's ~(0.7, 1.2)
    assert np.linalg.matrix_rank(np.asarray(grads["conv"]).reshape(72, 16)) == 16
    # The rest: Nesterov SGD's first step, lr * (g + momentum * g).
    np.testing.assert_allclose(np.asarray(updates["classifier"]["kernel"]),
                               -config.learning_rate * (1 + config.momentum) * np.asarray(grads["classifier"]["kernel"]),
                               rtol=1e-5)


def test_the_parameter_groups_of_the_recipe(fast_config):
    config = fast_config
    config.lookahead_every, config.num_epochs = 0, 10
    config.weight_decay = 0.01
    params = {"whiten": {"kernel": jnp.ones((2, 2, 3, 24)), "bias": jnp.ones(24)},
              "group1": {"Conv_0": {"kernel": jnp.ones((3, 3, 24, 4))},
                         "BatchNorm_0": {"scale": jnp.ones(4), "bias": jnp.ones(4)}},
              "classifier": {"kernel": jnp.ones((4, 10))}}
    labels = group_labels(params, config, "classifier")
    assert labels == {"whiten": {"kernel": "frozen", "bias": "backbone:timed"},
                      "group1": {"Conv_0": {"kernel": "backbone"},
                                 "BatchNorm_0": {"scale": "frozen", "bias": "backbone:norm_bias"}},
                      "classifier": {"kernel": "backbone"}}
    steps_per_epoch = 2
    tx = make_optimizer(config, steps_per_epoch, head_key="classifier")
    lr, _ = schedules(config, steps_per_epoch)
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)  # only the weight decay moves them: 1 - lr * wd
    update = quick(tx.update)
    for step in range(8):
        updates, state = update(grads, state, params)
        assert float(jnp.abs(updates["whiten"]["kernel"]).max()) == 0
        assert float(jnp.abs(updates["group1"]["BatchNorm_0"]["scale"]).max()) == 0
        conv = float(updates["group1"]["Conv_0"]["kernel"][0, 0, 0, 0])
        if step == 0:  # torch SGD: first step buf = d, update lr * (d + momentum * d), d = wd * p
            assert conv == pytest.approx(-float(lr(0)) * (1 + config.momentum) * config.weight_decay, rel=1e-5)
        # The norm biases: lr x 64 and weight decay / 64, so the same step as the convs'.
        assert float(updates["group1"]["BatchNorm_0"]["bias"][0]) == pytest.approx(conv, rel=1e-5)
        # The whitening bias: updated for whiten_bias_epochs = 3 epochs (6 steps), then never.
        whiten_bias = float(updates["whiten"]["bias"][0])
        assert whiten_bias == (pytest.approx(conv, rel=1e-5) if step < 6 else 0.0)


def test_the_triangle_schedule_is_airbenchs(fast_config):
    steps_per_epoch = 49
    lr, momentum = schedules(fast_config, steps_per_epoch)
    total = fast_config.num_epochs * steps_per_epoch

    def airbench(step):  # legacy/airbench94.py's get_lr
        warmup = int(total * 0.23)
        if step < warmup:
            frac = step / warmup
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup) / (total - warmup)
        return 1.0 * (1 - frac) + 0.07 * frac

    ours = np.asarray(jax.vmap(lr)(jnp.arange(total)))
    np.testing.assert_allclose(ours, [fast_config.learning_rate * airbench(s) for s in range(total)], rtol=1e-5)
    assert momentum == 0.85


def test_the_fast_config_is_airbench94(fast_config):
    config = fast_config
    validate_config(config)
    assert (config.model, config.num_classes, config.dataset, config.dtype) == ("airbench94", 10, "cifar10", "bfloat16")
    # airbench: lr 11.5 / kilostep_scale on a summed loss (x 1024 for the mean), kilostep_scale =
    # 1024 * (1 + 1 / (1 - 0.85)); torch weight_decay = wd / lr = 0.0153 * 1024 / 11.5 (/ 1024).
    assert config.learning_rate == pytest.approx(11.5 * 1024 / (1024 * (1 + 1 / 0.15)))
    assert config.learning_rate == pytest.approx(1.5)
    assert config.weight_decay == pytest.approx(0.0153 / 11.5)
    assert (config.batch_size, config.momentum, config.nesterov, config.bn_bias_lr_mult) == (1024, 0.85, True, 64.0)
    assert (config.label_smoothing, config.crop_padding, config.alternating_flip, config.tta_level) == (0.2, 2, True, 2)
    assert (config.lookahead_every, config.whiten_bias_epochs, config.schedule) == (5, 3, "triangle")
    # The seed recipe is unchanged by the new keys' defaults.
    default = load_config_file("default")
    assert (default.label_smoothing, default.bn_bias_lr_mult, default.frozen_params, default.lookahead_every,
            default.alternating_flip, default.tta_level, default.crop_padding, default.whiten_bias_epochs) == (
        0.0, 1.0, "", 0, False, 0, 4, 0)


def test_the_recipe_trains_a_tiny_airbench(tiny):
    """The whole recipe's train step (whitening init, frozen parameters, alternating flips,
    lookahead, label smoothing, bfloat16) and its TTA evaluation at width 1/16, compiled once
    without XLA's optimisations: the loss falls on a repeated batch, frozen parameters stay,
    and the last step (step 8 of 8) takes lookahead's slow weights."""
    from cifar_jax.steps import eval_step

    fresh, state, images = tiny
    kernel = np.asarray(state.params["whiten"]["kernel"])
    assert not np.allclose(kernel, np.asarray(fresh.params["whiten"]["kernel"]))
    batch = {"image": images[:16], "label": np.arange(16) % 10, "index": np.arange(16)}

    def both(state, batch, rng):
        return eval_step(state, batch), train_step(state, batch, rng)

    step = jax.jit(both).lower(state, batch, jax.random.key(1)).compile(QUICK)
    losses = []
    for _ in range(8):
        test, (state, metrics) = step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    assert math.isfinite(float(test["loss"])) and test["loss"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(state.params["whiten"]["kernel"]), kernel)
    assert all(np.all(np.asarray(bn["scale"]) == 1) for group in ("group1", "group2", "group3")
               for name, bn in state.params[group].items() if name.startswith("BatchNorm"))
    lookahead_state = state.opt_state.inner_state[1]
    assert int(state.step) == 8 and int(lookahead_state.count) == 8
    for ours, slow in zip(jax.tree.leaves(state.params), jax.tree.leaves(lookahead_state.slow)):
        # params + (slow - params): the slow weights up to float32 rounding.
        np.testing.assert_allclose(np.asarray(ours), np.asarray(slow), rtol=1e-6, atol=1e-6)
