import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax.models import BatchNorm, ResNet9
from cifar_jax.steps import random_init


def _param_count(model):
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def test_seed_resnet9_has_the_seed_parameter_count():
    assert _param_count(ResNet9(num_classes=100)) == 7_598_820


def test_width_and_classes_change_the_model():
    # Twice the width: every conv has 4x the weights; the seed halved the original this way.
    wide = _param_count(ResNet9(num_classes=100, width=2.0))
    assert 4 * 7_500_000 < wide < 4 * 7_600_000
    assert _param_count(ResNet9(num_classes=10)) == 7_598_820 - 90 * 513


def test_forward_shapes_and_train_flag():
    model = ResNet9(num_classes=7, width=0.125)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    # Jitted: eagerly, every op compiles on its own (about 20 s on 2 cores).
    variables = random_init(model, jax.random.key(0))
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert logits.shape == (4, 7)
    train_logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert train_logits.shape == (4, 7)
    # Training mode normalises with batch statistics, so its output differs from eval mode.
    assert not np.allclose(train_logits, logits)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), updates["batch_stats"], variables["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_init_follows_pytorch_default_bounds():
    variables = random_init(ResNet9(num_classes=100), jax.random.key(0))
    kernel = np.asarray(variables["params"]["res3"]["ConvBlock_0"]["Conv_0"]["kernel"])
    bias = np.asarray(variables["params"]["res3"]["ConvBlock_0"]["Conv_0"]["bias"])
    bound = 1 / np.sqrt(512 * 9)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.99 * bound
    assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.01)  # uniform, not normal
    assert np.abs(bias).max() <= bound and np.std(bias) > 0.5 * bound / np.sqrt(3)
    head = np.asarray(variables["params"]["classifier"]["kernel"])
    assert np.abs(head).max() <= 1 / np.sqrt(512)


def _bn(x, mask=None, momentum=0.1):
    layer = BatchNorm(momentum=momentum)
    variables = layer.init(jax.random.key(0), x, train=False)
    y, updates = layer.apply(variables, x, train=True, mask=mask, mutable=["batch_stats"])
    return np.asarray(y), jax.tree.map(np.asarray, updates["batch_stats"])


def test_batchnorm_matches_pytorch_semantics():
    x = np.asarray(jax.random.normal(jax.random.key(3), (6, 3, 3, 4))) * 2 + 1
    y, stats = _bn(jnp.asarray(x))
    flat = x.reshape(-1, 4)
    mean, biased = flat.mean(0), flat.var(0)
    unbiased = flat.var(0, ddof=1)
    # Normalised with the biased variance, eps 1e-5 ...
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(biased + 1e-5), rtol=1e-4, atol=1e-5)
    # ... running stats: new = 0.9 * old + 0.1 * batch, with the unbiased variance.
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * unbiased, rtol=1e-5)


def test_batchnorm_mask_equals_the_short_batch():
    x = jax.random.normal(jax.random.key(4), (8, 2, 2, 3))
    mask = jnp.arange(8) < 5
    y_masked, stats_masked = _bn(x, mask)
    y_short, stats_short = _bn(x[:5])
    np.testing.assert_allclose(y_masked[:5], y_short, rtol=1e-5, atol=1e-6)
    for key in ("mean", "var"):
        np.testing.assert_allclose(stats_masked[key], stats_short[key], rtol=1e-6)


def test_batchnorm_eval_uses_running_statistics():
    layer = BatchNorm()
    x = jnp.ones((2, 1, 1, 3)) * 3.0
    variables = {
        "params": {"scale": jnp.full(3, 2.0), "bias": jnp.full(3, 0.5)},
        "batch_stats": {"mean": jnp.full(3, 1.0), "var": jnp.full(3, 4.0)},
    }
    y = layer.apply(variables, x, train=False)
    np.testing.assert_allclose(y, (3 - 1) / np.sqrt(4 + 1e-5) * 2 + 0.5, rtol=1e-6)
