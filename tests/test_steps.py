import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_jax.augment import normalize
from cifar_jax.steps import (
    create_train_state,
    eval_on_indices,
    eval_step,
    train_step,
    train_step_on_indices,
)


@pytest.fixture
def state(smoke_config):
    return create_train_state(jax.random.key(0), smoke_config, steps_per_epoch=8)


def _constant_images(n, seed=0):
    """Each image one flat colour: crops and flips leave it unchanged, so a masked
    padded batch and the short batch it stands for see identical inputs."""
    colours = np.random.default_rng(seed).integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(colours, (n, 32, 32, 3)).copy()


def test_padded_masked_batch_equals_the_short_batch(state):
    # Plain SGD with lr 1 so the parameter change is the gradient itself (Adam's first
    # step is only the gradient's sign, and would hide a contaminated gradient).
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
    state = state.replace(tx=sgd, opt_state=sgd.init(state.params))
    images, labels = _constant_images(8), np.arange(8) % 10
    short = {"image": jnp.asarray(images[:5]), "label": jnp.asarray(labels[:5])}
    padded = {
        "image": jnp.asarray(images),
        "label": jnp.asarray(labels),
        "mask": jnp.arange(8) < 5,
    }
    rng = jax.random.key(7)
    # Full float32 convolutions: on GPUs the default (TF32) rounds differently for the two
    # batch shapes, which is not what this test is about.
    with jax.default_matmul_precision("float32"):
        s_short, m_short = train_step(state, short, rng)
        s_pad, m_pad = train_step(state, padded, rng)
    assert float(m_pad["count"]) == 5
    np.testing.assert_allclose(m_pad["loss"], m_short["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_pad["accuracy"], m_short["accuracy"])
    for a, b, before in zip(
        jax.tree.leaves(s_pad.params), jax.tree.leaves(s_short.params), jax.tree.leaves(state.params)
    ):
        # Gradients here are O(0.1-1), and unmasked padding changes them by as much;
        # conv biases ahead of BatchNorm have zero true gradient, only rounding noise.
        np.testing.assert_allclose(a - before, b - before, rtol=1e-3, atol=1e-4)
    for a, b in zip(jax.tree.leaves(s_pad.batch_stats), jax.tree.leaves(s_short.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_last_short_batch_does_not_recompile(state):
    images = jnp.asarray(_constant_images(100))
    labels = jnp.arange(100) % 10
    rng = jax.random.key(0)
    full = jnp.arange(64, dtype=jnp.int32)
    before = train_step_on_indices._cache_size()
    state, _ = train_step_on_indices(state, images, labels, full, jnp.ones(64, bool), rng)
    compiled = train_step_on_indices._cache_size()
    last = jnp.concatenate([jnp.arange(64, 100), jnp.zeros(28, jnp.int32)])
    state, metrics = train_step_on_indices(state, images, labels, last, jnp.arange(64) < 36, rng)
    assert train_step_on_indices._cache_size() == compiled <= before + 1
    assert float(metrics["count"]) == 36


def test_train_step_updates_state_and_reports_lr(state, smoke_config):
    batch = {"image": jnp.asarray(_constant_images(16)), "label": jnp.arange(16) % 10}
    new, metrics = train_step(state, batch, jax.random.key(0))
    assert int(new.step) == 1
    assert float(metrics["learning_rate"]) == pytest.approx(smoke_config.learning_rate / 25, rel=1e-5)
    assert np.isfinite(float(metrics["loss"]))
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))]
    assert all(changed)


def test_eval_step_sees_no_augmentation(state):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 16)
    metrics = eval_step(state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)})
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats},
        normalize(jnp.asarray(images), state.mean, state.std),
        train=False,
    )
    expected = np.mean(np.argmax(np.asarray(logits), -1) == labels)
    assert float(metrics["accuracy"]) == pytest.approx(expected)
    log_probs = jax.nn.log_softmax(logits)
    assert float(metrics["loss"]) == pytest.approx(float(-jnp.mean(log_probs[jnp.arange(16), labels])), rel=1e-5)
    # Deterministic: the same batch twice gives the same numbers.
    again = eval_step(state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)})
    assert float(again["loss"]) == float(metrics["loss"])


def test_eval_on_indices_counts_only_real_examples(state):
    images = jnp.asarray(_constant_images(10))
    labels = jnp.arange(10) % 10
    indices = jnp.asarray([0, 1, 2, 0, 0], jnp.int32)
    metrics = eval_on_indices(state, images, labels, indices, jnp.arange(5) < 3)
    direct = eval_step(state, {"image": images[:3], "label": labels[:3]})
    assert float(metrics["count"]) == 3
    np.testing.assert_allclose(metrics["loss"], direct["loss"], rtol=1e-6)


def test_augment_switch_turns_crop_and_flip_off(state):
    rng = np.random.default_rng(2)
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, 10, 16)),
    }
    plain = state.replace(augment=False)
    # Without augmentation the step's input no longer depends on the key.
    a, _ = train_step(plain, batch, jax.random.key(0))
    b, _ = train_step(plain, batch, jax.random.key(1))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    c, _ = train_step(state, batch, jax.random.key(0))
    d, _ = train_step(state, batch, jax.random.key(1))
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(c.params), jax.tree.leaves(d.params)))
