"""The parameter-tree contract of cifar_jax.models (docs/models.md): checkpoints and the
torch converter name variables by their paths, so the package's layout may change but the
trees may not.

RESNET9_TREE is ResNet9(num_classes=10, width=0.125)'s variables as the code before the
models package (cifar_jax/models.py, git b6ad15f) made them, listed once by
jax.eval_shape: the format of every ResNet9 checkpoint and of cifar_jax.convert's
mapping to the seed's PyTorch state_dict. The other models' trees carry torchvision's layer
names (each layer a direct child of the model): pinned below against the imagenet_* models
(whose names tests/test_pretrained.py holds to torchvision's state_dicts), and by their
parameter counts (tests/test_zoo.py).
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
    """BatchNorm under another class: its calls show where the norm passed in was used."""


def _norm_calls(model) -> list[str]:
    """The class names of the norm layers (layers.BatchNorm and its subclasses) that `model`'s
    init calls, one per call."""
    calls = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, layers.BatchNorm):
            calls.append(type(context.module).__name__)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    return calls


@pytest.mark.parametrize("name", list(TINY_WIDTHS))
def test_norm_is_passed_to_every_norm_layer(name):
    norms = sum(path.endswith("/scale") for path, _, _ in _tree(models.build(name, 10, TINY_WIDTHS[name])))
    assert norms > 0
    assert _norm_calls(models.build(name, 10, TINY_WIDTHS[name], norm=OtherNorm)) == ["OtherNorm"] * norms


# The layers of each CIFAR variant (100 classes, full width) that torchvision's ImageNet model
# of its architecture (models.CIFAR_OF; 1000 classes) lacks or shapes otherwise: every other layer has torchvision's name and
# shapes, so its weights load there (cifar_jax.pretrained). resnet152 is resnet50's code with
# more blocks: left out (its trace is the slowest).
CIFAR_ONLY = {
    "resnet18": {"conv1", "classifier"},  # the 3x3 stem conv, and the head of 100 classes
    "resnet50": {"conv1", "classifier"},
    "vgg16": {"classifier"},  # Linear(512, 100); torchvision's fc6 and fc7 are not there
    "mobilenet_v2": {"features_1_expand_0", "features_1_expand_1", "classifier",
                     *(f"features_{block}_shortcut_{i}" for block in (1, 2, 11, 17) for i in (0, 1))},
    "efficientnet_b0": {"classifier"},  # only the stem's stride differs
}


def _layers(model) -> dict[str, dict]:
    """{top-level layer: {collection/leaf: shape}}; each layer must hold variables, not layers."""
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    found: dict = {}
    for collection, tree in variables.items():
        for layer, leaves in tree.items():
            for leaf, value in leaves.items():
                assert hasattr(value, "shape"), f"{collection}/{layer}/{leaf} is not a variable"
                found.setdefault(layer, {})[f"{collection}/{leaf}"] = value.shape
    return found


@pytest.mark.parametrize("name", sorted(CIFAR_ONLY))
def test_a_cifar_variant_has_the_layers_of_its_torchvision_architecture(name):
    assert set(CIFAR_ONLY) | {"resnet152"} == set(models.CIFAR_OF)
    cifar = _layers(models.build(name, 100))
    torchvision = _layers(models.build("imagenet_" + models.CIFAR_OF[name], 1000))
    assert {layer for layer, shapes in cifar.items() if torchvision.get(layer) != shapes} == CIFAR_ONLY[name]


def test_registry_builds_with_attributes():
    model = models.build("vgg16", num_classes=7, width=0.5, dtype="bfloat16", norm=OtherNorm)
    assert (model.num_classes, model.width, model.dtype, model.norm) == (7, 0.5, jnp.bfloat16, OtherNorm)
    assert isinstance(model, nn.Module)
