"""The train and eval steps: padding and masking, the scanned multi-step call, the learning
rate, augmentation on and off, inference mode.

Every step here runs the smoke config on a batch of its batch size (32), so the compiled
programs are ones other tests compile too: a train step on a batch without a mask from the
state README.md's example loop trains (7 steps per epoch: it drops the last, short batch),
and the training loop's calls of one step and of two scanned steps over the smoke data set
(the smoke runs', and that of --config.progress_updates=4 as a GPU runs it:
tests/test_loop_promises.py)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_jax import multistep
from cifar_jax.augment import normalize
from cifar_jax.data import load_dataset
from cifar_jax.steps import create_train_state, eval_step, train_step
from tests.checkpoint_runs import smoke_config, smoke_state
from tests.compiles import count_compilations

BATCH = 32  # configs/smoke.py's batch_size


@pytest.fixture
def state():
    return smoke_state()


@pytest.fixture(scope="module")
def readme_state():
    """The state README.md's example loop builds: 250 // 32 = 7 steps per epoch."""
    return create_train_state(jax.random.key(0), smoke_config(), 250 // BATCH)


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
    images, labels = _constant_images(BATCH), np.arange(BATCH) % 10
    short = {"image": jnp.asarray(images[:5]), "label": jnp.asarray(labels[:5])}
    padded = {
        "image": jnp.asarray(images),
        "label": jnp.asarray(labels),
        "mask": jnp.arange(BATCH) < 5,
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


def test_scanned_steps_equal_single_steps_and_compile_once(state):
    data = load_dataset(smoke_config())
    images, labels = jnp.asarray(data.train_images), jnp.asarray(data.train_labels)
    rng = jax.random.key(0)
    # The last two batches of an epoch of the 250 smoke images: 32 real, then 26 real of 32.
    order, mask = multistep.epoch_order(jax.random.key(5), 0, 250, BATCH)
    order, mask = order[-2:], mask[-2:]
    assert mask.sum(axis=1).tolist() == [32, 26]
    # Placed as the training loop places them (committed to the device): the same programs.
    placed = multistep.replicate((state, images, labels, order, mask, rng), None)
    # The reference: one step per call (what the loop runs on CPU: a lone train_step, not a
    # scan; the smoke runs' compiled program). train_steps donates the state it is given.
    expected, expected_metrics = jax.tree.map(jnp.copy, placed[0]), []
    for i in range(2):
        expected, metrics = multistep.train_steps(expected, *placed[1:3], order[i:i + 1], mask[i:i + 1], placed[5])
        expected_metrics.append(jax.tree.map(lambda x: x[0], jax.device_get(metrics)))
    with count_compilations() as compiled:
        scanned, metrics = multistep.train_steps(jax.tree.map(jnp.copy, placed[0]), *placed[1:])
    # Exactly defined: the shapes and counts, and the first step, taken from the same state
    # on the same batch (a forward and backward pass; the scan body and the lone step are
    # different XLA programs, so "equal" means to a few float32 ulps, not bit for bit).
    assert metrics["count"].tolist() == [32, 26] and metrics["loss"].shape == (2,)
    assert jax.tree.structure(scanned) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(expected)):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert int(scanned.step) == int(expected.step) == 2
    np.testing.assert_allclose(metrics["loss"][0], expected_metrics[0]["loss"], rtol=1e-6)
    np.testing.assert_array_equal(metrics["accuracy"][0], expected_metrics[0]["accuracy"])
    # The second step starts from states that may differ by rounding already. Measured
    # (jax 0.10.2, smoke model): its loss differs by 5e-6 relative on one AMD EPYC and 6e-8 on
    # another; a real bug is far outside 1e-4: the padding mask ignored changes it by 1e-1,
    # another augmentation key by 6e-2.
    np.testing.assert_allclose(metrics["loss"][1], expected_metrics[1]["loss"], rtol=1e-4)
    # Accuracy counts argmaxes: allow one of the 26 to flip on a near-tie.
    np.testing.assert_allclose(metrics["accuracy"][1], expected_metrics[1]["accuracy"], atol=1.01 / 26)
    # BatchNorm statistics after both steps: the second step's forward pass runs on the
    # first step's weights, which agree to float32 precision, so the statistics do too:
    # measured 2.4e-6 at most (of values up to 0.97). Bound 2e-4: a conv bias ahead of a
    # BatchNorm has only rounding noise as its gradient, and if its sign flips, Adam's first
    # step (+-lr/25 = 4e-4) moves that channel's running mean by 0.1 x 8e-4. Another
    # augmentation key for the second step moves them by up to 2.4e-2.
    for (path, a), b in zip(jax.tree.leaves_with_path(scanned.batch_stats), jax.tree.leaves(expected.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4, err_msg=jax.tree_util.keystr(path))
    # The weights after the second step: Adam moves each weight by about +-lr per step
    # whatever its gradient's size, so a weight whose gradient is rounding noise (nearly
    # cancelling terms; zero for conv biases ahead of BatchNorm) can land up to two steps
    # away, and how many such weights there are depends on the CPU (24 % beyond 1e-5 on one
    # AMD EPYC, 0.01 % on another). That is all float32 can promise here.
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(scanned.params)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(expected.params)])
    np.testing.assert_allclose(a, b, atol=2 * 2 * 1e-2 / 25)
    # Another epoch (a new order, the same shapes) reuses the compiled call.
    order, mask = multistep.replicate(multistep.epoch_order(jax.random.key(5), 1, 250, BATCH), None)
    with count_compilations() as compiled_again:
        scanned, _ = multistep.train_steps(scanned, *placed[1:3], order[:2], mask[:2], placed[5])
    assert compiled["train_steps"] == 1 and compiled_again["train_steps"] == 0
    assert int(scanned.step) == 4


def test_train_step_updates_state_and_reports_lr(readme_state):
    state = readme_state
    batch = {"image": jnp.asarray(_constant_images(BATCH)), "label": jnp.arange(BATCH) % 10}
    new, metrics = train_step(state, batch, jax.random.key(0))
    assert int(new.step) == 1
    assert float(metrics["learning_rate"]) == pytest.approx(smoke_config().learning_rate / 25, rel=1e-5)
    assert np.isfinite(float(metrics["loss"]))
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))]
    assert all(changed)


def test_eval_step_sees_no_augmentation(state):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, BATCH)
    metrics = eval_step(state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)})
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats},
        normalize(jnp.asarray(images), state.step_config.mean, state.step_config.std),
        train=False,
    )
    expected = np.mean(np.argmax(np.asarray(logits), -1) == labels)
    assert float(metrics["accuracy"]) == pytest.approx(expected)
    log_probs = jax.nn.log_softmax(logits)
    assert float(metrics["loss"]) == pytest.approx(float(-jnp.mean(log_probs[jnp.arange(BATCH), labels])), rel=1e-5)
    # Deterministic: the same batch twice gives the same numbers.
    again = eval_step(state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)})
    assert float(again["loss"]) == float(metrics["loss"])


def test_eval_batches_count_only_real_examples(state):
    images = jnp.asarray(_constant_images(10))
    labels = jnp.arange(10) % 10
    order, mask = multistep.pad_to_batches(jnp.arange(3), 2)
    metrics = multistep.eval_batches(state, images, labels, order, mask)
    direct = eval_step(state, {"image": images[:3], "label": labels[:3]})
    assert metrics["count"].tolist() == [2, 1]
    np.testing.assert_allclose(multistep.weighted_mean(metrics, "loss"), direct["loss"], rtol=1e-6)
    np.testing.assert_allclose(multistep.weighted_mean(metrics, "accuracy"), direct["accuracy"])


def test_augment_switch_turns_crop_and_flip_off(readme_state):
    state = readme_state
    rng = np.random.default_rng(2)
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, 10, BATCH)),
    }
    plain = state.replace(step_config=dataclasses.replace(state.step_config, augment=False))
    # Without augmentation the step's input no longer depends on the key.
    a, _ = train_step(plain, batch, jax.random.key(0))
    b, _ = train_step(plain, batch, jax.random.key(1))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    c, _ = train_step(state, batch, jax.random.key(0))
    d, _ = train_step(state, batch, jax.random.key(1))
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(c.params), jax.tree.leaves(d.params)))
