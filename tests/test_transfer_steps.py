"""The training side of fine-tuning pretrained models (docs/finetuning.md): the resize to
`image_size` in the steps, `freeze_backbone` as feature extraction, `grad_accum_steps`, and
their config checks (the configs/transfer/ recipes: tests/test_transfer_recipes.py).

The smoke config's state and batch size (32) serve the step tests, so the default step
shares its compiled program with tests/test_steps.py; a ResNet18 serves the resize test
(ResNet9 needs 32x32 inputs), its train step traced for shapes only."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_jax import models
from cifar_jax.augment import augment, model_input, normalize, resize
from cifar_jax.compiled import tuned_jit
from cifar_jax.config import load_config_file, validate_config
from cifar_jax.errors import ConfigError
from cifar_jax.evaluate import compute_logits
from cifar_jax.steps import StepConfig, create_train_state, eval_step, train_step
from tests.checkpoint_runs import smoke_state
from tests.conftest import REPO

BATCH = 32  # configs/smoke.py's batch_size
SMALL = 8  # the batch of the tests that build a state of their own (_config)


def _config(**changes):
    config = load_config_file(str(REPO / "configs" / "smoke.py"))
    config.batch_size = SMALL
    for key, value in changes.items():
        config[key] = value
    return config


def _batch(seed=0, n=BATCH, mask=None):
    rng = np.random.default_rng(seed)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
             "label": jnp.asarray(rng.integers(0, 10, n))}
    if mask is not None:
        batch["mask"] = jnp.asarray(mask)
    return batch


def _with_sgd(state, learning_rate=1.0):
    """The state with plain SGD (lr 1: the parameter change is minus the gradient)."""
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
    return state.replace(tx=sgd, opt_state=sgd.init(state.params))


def _with(state, **step_settings):
    return state.replace(step_config=dataclasses.replace(state.step_config, **step_settings))


@pytest.fixture(scope="module")
def state():
    return smoke_state()


# --- Resize -----------------------------------------------------------------------------------


def test_resize_is_torch_bilinear_upsampling_and_a_no_op_at_the_stored_size():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    assert resize(x, 32) is x
    for size in (64, 224):
        ours = np.asarray(resize(jnp.asarray(x), size))
        theirs = torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
            align_corners=False, antialias=False).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_normalising_before_or_after_the_resize_agree():
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    after = normalize(resize(images.astype(jnp.float32), 64), [0, 0, 0], [1, 1, 1])
    after = (after - jnp.asarray(mean)) / jnp.asarray(std)
    np.testing.assert_allclose(model_input(images, mean, std, 64), after, atol=1e-5)


def _pre_change_train_step(state, batch, rng):
    """steps.train_step as it was before image_size, freeze and grad_accum_steps (a copy)."""
    settings = state.step_config
    weight = batch["mask"].astype(jnp.float32)
    mask = batch["mask"]
    step_rng = jax.random.fold_in(rng, state.step)
    images = augment(step_rng, batch["image"]) if settings.augment else batch["image"]
    images = normalize(images, settings.mean, settings.std)

    def metrics_of(logits, labels, weight):
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        count = jnp.sum(weight)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return {"loss": jnp.sum(losses * weight) / count, "accuracy": jnp.sum(correct * weight) / count,
                "count": count}

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True, mask=mask,
            mutable=["batch_stats"], rngs={"dropout": jax.random.fold_in(step_rng, 1)})
        metrics = metrics_of(logits, batch["label"], weight)
        return metrics["loss"], (metrics, updates["batch_stats"])

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    finite = jnp.isfinite(metrics["loss"]) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics["learning_rate"] = new_state.learning_rate
    metrics["finite"] = finite
    return new_state, metrics


@pytest.mark.slow  # a second copy of the train step to compile; the step's numbers are held to PyTorch's
def test_the_default_step_is_the_step_before_these_options(state):
    assert (state.step_config.image_size, state.step_config.grad_accum_steps) == (32, 1)
    batch, rng = _batch(2, mask=np.arange(BATCH) < 6), jax.random.key(3)
    new, _ = train_step(state, batch, rng)
    expected, _ = tuned_jit(_pre_change_train_step)(state, batch, rng)  # compiled as train_step is
    for name in ("params", "batch_stats", "opt_state"):
        for a, b in zip(jax.tree.leaves(getattr(new, name)), jax.tree.leaves(getattr(expected, name))):
            np.testing.assert_array_equal(a, b)


def _recording(state):
    """The state with an apply_fn that records the input shapes it is traced with."""
    seen = []

    def apply_fn(variables, images, *args, **kwargs):
        seen.append(images.shape)
        return state.apply_fn(variables, images, *args, **kwargs)

    return state.replace(apply_fn=apply_fn), seen


def test_train_and_eval_feed_the_model_image_size_inputs():
    # ResNet18 (a global average pool) takes any input size; ResNet9's flatten needs 32x32.
    config = _config(model="resnet18", image_size=64)
    state = create_train_state(jax.random.key(0), config, steps_per_epoch=4)
    assert state.step_config.image_size == 64
    big, seen = _recording(state)
    batch = _batch(4, n=SMALL)
    # The train step traced for shapes only (what reaches the model is decided while
    # tracing; compiling ResNet18's backward pass would only add time).
    _, shapes = jax.eval_shape(train_step, big, batch, jax.random.key(0))
    assert shapes["loss"].shape == () and shapes["loss"].dtype == jnp.float32
    metrics = eval_step(big, batch)
    assert seen == [(SMALL, 64, 64, 3), (SMALL, 64, 64, 3)]
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    x = jax.image.resize(normalize(batch["image"], state.step_config.mean, state.step_config.std),
                         (SMALL, 64, 64, 3), "bilinear")
    logits = jax.jit(lambda v, x: state.apply_fn(v, x, train=False))(variables, x)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    # The evaluate and predict CLIs' logits (cifar_jax.evaluate.compute_logits) resize too.
    ours = compute_logits(variables, config, np.asarray(batch["image"]), batch_size=SMALL)
    np.testing.assert_allclose(ours, logits, rtol=1e-4, atol=1e-5)


# --- Pretrained weights -----------------------------------------------------------------------


def test_create_train_state_takes_pretrained_variables_and_a_restore_template_does_not(monkeypatch, state):
    import sys
    import types

    import cifar_jax
    from cifar_jax.checkpoint.restoring import abstract_train_state

    calls = []
    weights = jax.tree.map(lambda x: np.full(x.shape, 0.5, np.float32),
                           {"params": state.params, "batch_stats": state.batch_stats})

    def initial_variables(config, rng):
        calls.append(config.pretrained)
        return weights

    # A stand-in for cifar_jax.pretrained (whose loader reads torchvision weights).
    fake = types.ModuleType("cifar_jax.pretrained")
    fake.initial_variables = initial_variables
    monkeypatch.setitem(sys.modules, "cifar_jax.pretrained", fake)
    monkeypatch.setattr(cifar_jax, "pretrained", fake, raising=False)
    config = _config(pretrained="weights.pth")
    loaded = create_train_state(jax.random.key(0), config, steps_per_epoch=4)
    assert calls == ["weights.pth"]
    for a in jax.tree.leaves((loaded.params, loaded.batch_stats)):
        assert isinstance(a, jax.Array) and np.all(np.asarray(a) == 0.5)
    abstract_train_state(config, steps_per_epoch=4)
    assert calls == ["weights.pth"]  # shapes only: the weights are not read


# --- Freezing ---------------------------------------------------------------------------------


def test_a_frozen_backbone_keeps_its_params_and_statistics_and_the_head_trains():
    config = _config(freeze_backbone=True, augment=False)
    frozen = create_train_state(jax.random.key(0), config, steps_per_epoch=4)
    assert frozen.step_config.freeze_backbone
    batch = _batch(5, n=SMALL)
    new, metrics = train_step(frozen, batch, jax.random.key(0))
    new, _ = train_step(new, _batch(6, n=SMALL), jax.random.key(0))
    head = models.HEAD_KEY
    for key in frozen.params:
        for a, b in zip(jax.tree.leaves(new.params[key]), jax.tree.leaves(frozen.params[key])):
            assert np.array_equal(a, b) == (key != head), key
    for a, b in zip(jax.tree.leaves(new.batch_stats), jax.tree.leaves(frozen.batch_stats)):
        np.testing.assert_array_equal(a, b)
    # BatchNorm in inference mode: the train step's loss is the eval step's on the same batch.
    np.testing.assert_allclose(metrics["loss"], eval_step(frozen, batch)["loss"], rtol=1e-6)


# --- Gradient accumulation --------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _reference(apply_fn, params, batch_stats, images, labels, real):
    """(gradient of the mean loss over the real examples, BatchNorm statistics after one
    train-mode pass) of one microbatch, computed directly (one program for every call)."""

    def loss_fn(params):
        logits, updates = apply_fn({"params": params, "batch_stats": batch_stats}, images,
                                   train=True, mask=real, mutable=["batch_stats"])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.sum(losses * real) / jnp.sum(real), updates["batch_stats"]

    return jax.grad(loss_fn, has_aux=True)(params)


def test_two_microbatches_give_the_batch_gradient_and_two_sequential_statistics_updates(state):
    plain = _with(_with_sgd(state), augment=False)
    two = _with(plain, grad_accum_steps=2)
    images = normalize(_batch(7)["image"], plain.step_config.mean, plain.step_config.std)

    def check(mask, new):
        labels = _batch(7)["label"]
        # Microbatch j holds examples j, j + 2, j + 4, ... (strided).
        parts = [(images[j::2], labels[j::2], jnp.asarray(mask[j::2], jnp.float32)) for j in (0, 1)]
        counts = [float(p[2].sum()) for p in parts]
        grads, stats = [], plain
        for (x, y, real), count in zip(parts, counts):
            if count:
                g, batch_stats = _reference(stats.apply_fn, stats.params, stats.batch_stats, x, y, real)
                grads.append(jax.tree.map(lambda t: t * count, g))
                stats = stats.replace(batch_stats=batch_stats)
        expected = jax.tree.map(lambda *g: sum(g) / sum(counts), *grads)
        with jax.default_matmul_precision("float32"):
            for before, after, g in zip(jax.tree.leaves(plain.params), jax.tree.leaves(new.params),
                                        jax.tree.leaves(expected)):
                np.testing.assert_allclose(before - after, g, rtol=1e-3, atol=1e-4)
        for a, b in zip(jax.tree.leaves(new.batch_stats), jax.tree.leaves(stats.batch_stats)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    with jax.default_matmul_precision("float32"):
        full = np.ones(BATCH, bool)
        new, metrics = train_step(two, {**_batch(7), "mask": jnp.asarray(full)}, jax.random.key(0))
        assert float(metrics["count"]) == BATCH
        check(full, new)
        # One real example: the second microbatch is padding only; it adds no gradient and no
        # statistics update (it would give BatchNorm 0/0), and nothing becomes NaN.
        lone = np.arange(BATCH) < 1
        new, metrics = train_step(two, {**_batch(7), "mask": jnp.asarray(lone)}, jax.random.key(0))
        assert bool(metrics["finite"]) and float(metrics["count"]) == 1
        check(lone, new)


# --- The memory estimate ---------------------------------------------------------------------


def test_the_memory_estimate_follows_microbatches_and_freezing():
    from cifar_jax.memory import estimate_train_bytes

    config = _config()
    one = estimate_train_bytes(config)
    two = estimate_train_bytes(config, grad_accum_steps=2)
    frozen = estimate_train_bytes(_config(freeze_backbone=True))
    assert one["microbatch"] == SMALL and two["microbatch"] == SMALL // 2
    assert one["params"] == 4 * models.param_count(models.build("resnet9", 10, 0.125))
    assert two["gradients"] == 2 * one["gradients"]
    assert 0.45 < two["activations"] / one["activations"] < 0.55
    assert frozen["activations"] < 0.01 * one["activations"]
    assert one["total"] == sum(one[k] for k in ("params", "batch_stats", "optimizer", "gradients",
                                                 "inputs", "activations"))


def test_zoo_lists_the_memory_estimate(monkeypatch):
    from cifar_jax import zoo

    monkeypatch.setattr(zoo, "MODELS", {k: zoo.MODELS[k] for k in ("resnet9", "mobilenet_v2")})
    lines = zoo.table(num_classes=10, image_size=64, memory=True, batch_size=8, grad_accum_steps=2).splitlines()
    assert "64x64" in lines[0] and "batch 8 as 2 x 4" in lines[0]
    assert lines[2].startswith("| `resnet9` |") and lines[2].endswith("| - | - | - |")  # 32x32 only
    cells = lines[3].split("|")
    assert float(cells[5]) >= float(cells[6]) > 0


# --- Config checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("changes, expected", [
    ({"image_size": 0}, "image_size=0 must be a positive integer"),
    ({"grad_accum_steps": 0}, "grad_accum_steps=0 must be a positive integer"),
    ({"grad_accum_steps": 3}, "batch_size=8 does not split into grad_accum_steps=3 equal microbatches"),
])
def test_bad_transfer_keys_are_one_line_errors(changes, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        validate_config(_config(**changes))
    assert "\n" not in str(error.value)


def test_a_saved_config_without_the_new_keys_validates_and_keeps_the_old_steps():
    import ml_collections

    from cifar_jax.config import complete_saved_config

    saved = _config().to_dict()
    for key in ("image_size", "grad_accum_steps", "pretrained"):
        del saved[key]
    config = ml_collections.ConfigDict(complete_saved_config(saved))  # as checkpoint.load_run_config does
    validate_config(config)
    assert StepConfig.from_config(config) == StepConfig.from_config(_config())
