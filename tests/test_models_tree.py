"""The parameter-tree contract of cifar_jax.models (docs/models.md): checkpoints and the
torch converter name variables by their paths, so the package's layout may change but the
trees may not.

RESNET9_TREE is ResNet9(num_classes=10, width=0.125)'s variables as the code before the
models package (cifar_jax/models.py, git b6ad15f) made them, listed once by
jax.eval_shape: the format of every ResNet9 checkpoint and of cifar_jax.convert's
mapping to the seed's PyTorch state_dict. The other models' trees are pinned by their
parameter counts against PyTorch (tests/test_zoo.py) and by the norm test below.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cifar_jax import models
from cifar_jax.models import layers

RESNET9_TREE = [
    ("batch_stats/conv1/BatchNorm_0/mean", (4,), "float32"),
    ("batch_stats/conv1/BatchNorm_0/var", (4,), "float32"),
    ("batch_stats/conv2/BatchNorm_0/mean", (8,), "float32"),
    ("batch_stats/conv2/BatchNorm_0/var", (8,), "float32"),
    ("batch_stats/conv3/BatchNorm_0/mean", (16,), "float32"),
    ("batch_stats/conv3/BatchNorm_0/var", (16,), "float32"),
    ("batch_stats/conv4/BatchNorm_0/mean", (32,), "float32"),
    ("batch_stats/conv4/BatchNorm_0/var", (32,), "float32"),
    ("batch_stats/conv5/BatchNorm_0/mean", (64,), "float32"),
    ("batch_stats/conv5/BatchNorm_0/var", (64,), "float32"),
    ("batch_stats/res1/ConvBlock_0/BatchNorm_0/mean", (8,), "float32"),
    ("batch_stats/res1/ConvBlock_0/BatchNorm_0/var", (8,), "float32"),
    ("batch_stats/res1/ConvBlock_1/BatchNorm_0/mean", (8,), "float32"),
    ("batch_stats/res1/ConvBlock_1/BatchNorm_0/var", (8,), "float32"),
    ("batch_stats/res2/ConvBlock_0/BatchNorm_0/mean", (32,), "float32"),
    ("batch_stats/res2/ConvBlock_0/BatchNorm_0/var", (32,), "float32"),
    ("batch_stats/res2/ConvBlock_1/BatchNorm_0/mean", (32,), "float32"),
    ("batch_stats/res2/ConvBlock_1/BatchNorm_0/var", (32,), "float32"),
    ("batch_stats/res3/ConvBlock_0/BatchNorm_0/mean", (64,), "float32"),
    ("batch_stats/res3/ConvBlock_0/BatchNorm_0/var", (64,), "float32"),
    ("batch_stats/res3/ConvBlock_1/BatchNorm_0/mean", (64,), "float32"),
    ("batch_stats/res3/ConvBlock_1/BatchNorm_0/var", (64,), "float32"),
    ("params/classifier/bias", (10,), "float32"),
    ("params/classifier/kernel", (64, 10), "float32"),
    ("params/conv1/BatchNorm_0/bias", (4,), "float32"),
    ("params/conv1/BatchNorm_0/scale", (4,), "float32"),
    ("params/conv1/Conv_0/bias", (4,), "float32"),
    ("params/conv1/Conv_0/kernel", (3, 3, 3, 4), "float32"),
    ("params/conv2/BatchNorm_0/bias", (8,), "float32"),
    ("params/conv2/BatchNorm_0/scale", (8,), "float32"),
    ("params/conv2/Conv_0/bias", (8,), "float32"),
    ("params/conv2/Conv_0/kernel", (3, 3, 4, 8), "float32"),
    ("params/conv3/BatchNorm_0/bias", (16,), "float32"),
    ("params/conv3/BatchNorm_0/scale", (16,), "float32"),
    ("params/conv3/Conv_0/bias", (16,), "float32"),
    ("params/conv3/Conv_0/kernel", (3, 3, 8, 16), "float32"),
    ("params/conv4/BatchNorm_0/bias", (32,), "float32"),
    ("params/conv4/BatchNorm_0/scale", (32,), "float32"),
    ("params/conv4/Conv_0/bias", (32,), "float32"),
    ("params/conv4/Conv_0/kernel", (3, 3, 16, 32), "float32"),
    ("params/conv5/BatchNorm_0/bias", (64,), "float32"),
    ("params/conv5/BatchNorm_0/scale", (64,), "float32"),
    ("params/conv5/Conv_0/bias", (64,), "float32"),
    ("params/conv5/Conv_0/kernel", (3, 3, 32, 64), "float32"),
    ("params/res1/ConvBlock_0/BatchNorm_0/bias", (8,), "float32"),
    ("params/res1/ConvBlock_0/BatchNorm_0/scale", (8,), "float32"),
    ("params/res1/ConvBlock_0/Conv_0/bias", (8,), "float32"),
    ("params/res1/ConvBlock_0/Conv_0/kernel", (3, 3, 8, 8), "float32"),
    ("params/res1/ConvBlock_1/BatchNorm_0/bias", (8,), "float32"),
    ("params/res1/ConvBlock_1/BatchNorm_0/scale", (8,), "float32"),
    ("params/res1/ConvBlock_1/Conv_0/bias", (8,), "float32"),
    ("params/res1/ConvBlock_1/Conv_0/kernel", (3, 3, 8, 8), "float32"),
    ("params/res2/ConvBlock_0/BatchNorm_0/bias", (32,), "float32"),
    ("params/res2/ConvBlock_0/BatchNorm_0/scale", (32,), "float32"),
    ("params/res2/ConvBlock_0/Conv_0/bias", (32,), "float32"),
    ("params/res2/ConvBlock_0/Conv_0/kernel", (3, 3, 32, 32), "float32"),
    ("params/res2/ConvBlock_1/BatchNorm_0/bias", (32,), "float32"),
    ("params/res2/ConvBlock_1/BatchNorm_0/scale", (32,), "float32"),
    ("params/res2/ConvBlock_1/Conv_0/bias", (32,), "float32"),
    ("params/res2/ConvBlock_1/Conv_0/kernel", (3, 3, 32, 32), "float32"),
    ("params/res3/ConvBlock_0/BatchNorm_0/bias", (64,), "float32"),
    ("params/res3/ConvBlock_0/BatchNorm_0/scale", (64,), "float32"),
    ("params/res3/ConvBlock_0/Conv_0/bias", (64,), "float32"),
    ("params/res3/ConvBlock_0/Conv_0/kernel", (3, 3, 64, 64), "float32"),
    ("params/res3/ConvBlock_1/BatchNorm_0/bias", (64,), "float32"),
    ("params/res3/ConvBlock_1/BatchNorm_0/scale", (64,), "float32"),
    ("params/res3/ConvBlock_1/Conv_0/bias", (64,), "float32"),
    ("params/res3/ConvBlock_1/Conv_0/kernel", (3, 3, 64, 64), "float32"),
]

# Widths at which each model keeps at least 8 channels per stage (as tests/test_zoo_training.py).
TINY_WIDTHS = {"resnet9": 0.125, "resnet18": 0.125, "resnet50": 0.125, "resnet152": 0.0625,
               "vgg16": 0.125, "mobilenet_v2": 0.25, "efficientnet_b0": 0.25, "airbench94": 0.0625}


def _tree(model):
    """[(path, shape, dtype)] of the model's variables, from shapes only."""
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    return [("/".join(key.key for key in path), tuple(leaf.shape), str(leaf.dtype))
            for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_resnet9_tree_is_the_checkpoint_format(dtype):
    # The compute dtype changes no variable: parameters and statistics stay float32.
    assert _tree(models.build("resnet9", num_classes=10, width=0.125, dtype=dtype)) == RESNET9_TREE


class OtherNorm(layers.BatchNorm):
    """BatchNorm under another class name: its variables show where the norm was used."""


@pytest.mark.parametrize("name", list(TINY_WIDTHS))
def test_norm_is_passed_to_every_norm_layer(name):
    default = _tree(models.build(name, num_classes=10, width=TINY_WIDTHS[name]))
    other = _tree(models.build(name, num_classes=10, width=TINY_WIDTHS[name], norm=OtherNorm))
    assert any("/BatchNorm_" in path for path, _, _ in default)
    assert not any("BatchNorm" in path for path, _, _ in other)
    renamed = [(path.replace("/BatchNorm_", "/OtherNorm_"), shape, dtype) for path, shape, dtype in default]
    assert sorted(other) == sorted(renamed)


def test_registry_builds_with_attributes():
    model = models.build("vgg16", num_classes=7, width=0.5, dtype="bfloat16", norm=OtherNorm)
    assert (model.num_classes, model.width, model.dtype, model.norm) == (7, 0.5, jnp.bfloat16, OtherNorm)
    assert isinstance(model, nn.Module)
