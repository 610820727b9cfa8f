"""Training the zoo's models (cifar_jax.models): one model of each block family compiles its
train step once (small widths, float32, batch 2, 32x32), trains on one batch and goes
through a checkpoint; the others' train steps are traced for shapes (no compile)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import checkpoint, compiled, models
from cifar_jax.steps import train_step
from tests.checkpoint_runs import assert_trees_equal, smoke_config, write_config

# Widths for the training tests: small, but every stage keeps at least 8 channels.
TEST_WIDTHS = {"resnet9": 0.125, "resnet18": 0.125, "resnet50": 0.125, "resnet152": 0.0625,
               "vgg16": 0.125, "mobilenet_v2": 0.25, "efficientnet_b0": 0.25, "airbench94": 0.0625}




def test_every_cifar_model_has_a_test_width():
    assert set(TEST_WIDTHS) == set(models.MODELS) - set(models.IMAGENET_MODELS)


# XLA:CPU spends its compile time optimising code; these tiny steps do not need it (and
# the steps' own CPU options take a quarter off what is left: cifar_jax.compiled).
FAST_COMPILE = {**compiled.CPU_OPTIONS, "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _fresh_state(config):
    """create_train_state's TrainState with PyTorch-bounded uniform params drawn by numpy:
    on CPU, compiling each model's init (hundreds of random draws) costs more than its
    train step; the init itself is covered by the shape test above and test_model.py."""
    abstract = _abstract_state(config)
    rng = np.random.default_rng(0)

    def param(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return np.ones(leaf.shape, leaf.dtype)
        bound = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0.05
        return rng.uniform(-bound, bound, leaf.shape).astype(leaf.dtype)

    params = jax.tree_util.tree_map_with_path(param, abstract.params)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (np.ones if "var" in jax.tree_util.keystr(path) else np.zeros)(leaf.shape, leaf.dtype),
        abstract.batch_stats)
    return abstract.replace(params=params, batch_stats=stats, opt_state=jax.jit(abstract.tx.init)(params),
                            step=jnp.zeros((), jnp.int32))


def _config(name, **overrides):
    # The imagenet_* models have the fixed widths of torchvision's (pretrained) weights.
    return smoke_config(model=name, width=TEST_WIDTHS.get(name, 1.0), augment=False, num_epochs=8,
                        learning_rate=1e-2, **overrides)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "label": np.array([3, 7])}


# Which models compile and run a train step here. ResNet9 trains in most of the suite
# (tests/test_steps.py, the smoke runs); the quick run trains ResNet18 (basic blocks) and
# VGG16, the slow set ResNet50 (bottleneck blocks), MobileNetV2 and EfficientNet-B0 (the only
# one with dropout and stochastic depth), 14-35 s each on 2 CPU cores. ResNet152 is ResNet50's
# bottleneck blocks, more of them (3-8-36-3 instead of 3-4-6-3): its step is only traced
# (the test below), as are those of the ImageNet variants of MobileNetV2 and EfficientNet-B0
# (their forward passes are held to torchvision's in tests/test_pretrained.py; ResNet18's
# trains in the slow set's recipe run).
TRAINED = {"resnet18": (), "vgg16": (), "resnet50": (pytest.mark.slow,), "mobilenet_v2": (pytest.mark.slow,),
           "efficientnet_b0": (pytest.mark.slow,)}
TRACED = ["resnet152", "imagenet_mobilenet_v2", "imagenet_efficientnet_b0", "airbench94"]  # airbench94 trains
# in its own recipe in tests/test_fast.py


def _abstract_state(config):
    return checkpoint.abstract_train_state(config, steps_per_epoch=1)


@pytest.mark.parametrize("name", TRACED)
def test_the_models_never_trained_here_trace_their_train_step(name):
    """The whole train step (forward in train mode, gradients, optimizer) of the models no
    test trains, traced for shapes only: the new state has the old one's structure, shapes
    and dtypes."""
    config = _config(name)
    state = _abstract_state(config)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _batch())
    new, metrics = jax.eval_shape(train_step, state, batch, jax.random.key(0))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert metrics["loss"].shape == () and metrics["loss"].dtype == jnp.float32
    assert models.param_count(models.build(name, 10, config.width)) == sum(
        x.size for x in jax.tree.leaves(state.params))


@pytest.mark.parametrize("name", [pytest.param(n, marks=m) for n, m in TRAINED.items()])
def test_builds_runs_trains_and_checkpoints(name, tmp_path):
    config = _config(name)
    state = _fresh_state(config)
    batch = _batch()

    def eval_and_train(state, batch, rng):
        # One compiled call per model: the eval forward of the state, then the train step
        # (the jitted train_step is inlined into this one).
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        logits = state.apply_fn(variables, batch["image"].astype(jnp.float32) / 255, train=False)
        return logits, train_step(state, batch, rng)

    step = jax.jit(eval_and_train).lower(state, batch, jax.random.key(1)).compile(FAST_COMPILE)

    # Train steps (forward in train mode) on the same batch of 2: the loss goes down.
    rng = jax.random.key(1)
    losses, trained = [], state
    for i in range(8):
        logits, (trained, metrics) = step(trained, batch, rng)
        losses.append(float(metrics["loss"]))
        if i == 0:  # eval forward of the fresh state: float32 logits, deterministic
            assert logits.shape == (2, 10) and logits.dtype == jnp.float32
            assert np.all(np.isfinite(logits))
            np.testing.assert_array_equal(logits, step(state, batch, rng)[0])
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.5 * losses[0], losses
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), trained.batch_stats, state.batch_stats)
    assert any(jax.tree.leaves(moved))

    # The dropout rng reaches the model only where it has dropout or stochastic depth
    # (augmentation is off here, so it is the step's only randomness).
    _, (_, a) = step(state, batch, jax.random.key(2))
    _, (_, b) = step(state, batch, jax.random.key(3))
    if name == "efficientnet_b0":
        assert float(a["loss"]) != float(b["loss"])
    else:
        assert float(a["loss"]) == float(b["loss"])

    # Save and restore through cifar_jax.checkpoint, as the training loop does.
    write_config(tmp_path, config)
    with checkpoint.open_manager(tmp_path, config) as checkpoints:
        assert checkpoint.save(checkpoints, trained, 7, {"epoch": 7, "test_acc": 0.5},
                               rngs={"augment": jax.random.key(5), "data": jax.random.key(6)},
                               class_names=tuple(f"c{i}" for i in range(10)), force=True)
    restored, saved_config = checkpoint.restore(tmp_path)
    assert saved_config.model == name
    assert_trees_equal(restored.params, trained.params)
    assert_trees_equal(restored.batch_stats, trained.batch_stats)
    assert int(restored.step) == int(trained.step)
