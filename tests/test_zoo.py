"""The other models of the seed report (cifar_jax.models): size, forward, training, checkpoints,
and the max_param_mb budget. Every model's train step is traced for shapes (no compile); one
model of each block family compiles its step once (small widths, float32, batch 2, 32x32)
and trains."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import checkpoint, models, zoo
from cifar_jax.config import load_config_file, validate_config
from cifar_jax.errors import ConfigError
from cifar_jax.steps import train_step
from cifar_jax.train import main
from tests.checkpoint_runs import assert_trees_equal, smoke_config, write_config
from tests.conftest import REPO

# Parameter counts at 10 classes and full width of the published CIFAR variants followed.
# kuangliu/pytorch-cifar = https://github.com/kuangliu/pytorch-cifar, models/*.py; each of
# these numbers was recomputed with torch from a re-statement of that file's definition
# (sum of p.numel() over model.parameters()), and they are the counts usually quoted for it.
REFERENCE_PARAMS_10 = {
    "resnet9": 7_552_650,  # the seed's ResNet9 (cifar_jax.reference.ResNet9), README
    "resnet18": 11_173_962,  # kuangliu models/resnet.py ResNet18()
    "resnet50": 23_520_842,  # kuangliu models/resnet.py ResNet50()
    "resnet152": 58_156_618,  # kuangliu models/resnet.py ResNet152()
    "vgg16": 14_728_266,  # kuangliu models/vgg.py VGG('VGG16') (BatchNorm, Linear(512, 10))
    "mobilenet_v2": 2_296_922,  # kuangliu models/mobilenetv2.py MobileNetV2()
    # torchvision efficientnet_b0: num_params 5,288,548 at 1000 classes (torchvision docs,
    # EfficientNet_B0_Weights.IMAGENET1K_V1), minus 990 * (1280 + 1) for a 10-class head;
    # the stride-1 stem changes no shape.
    "efficientnet_b0": 5_288_548 - 990 * 1281,
}
# Widths for the training tests: small, but every stage keeps at least 8 channels.
TEST_WIDTHS = {"resnet9": 0.125, "resnet18": 0.125, "resnet50": 0.125, "resnet152": 0.0625,
               "vgg16": 0.125, "mobilenet_v2": 0.25, "efficientnet_b0": 0.25}


def test_registry_lists_every_model():
    # The imagenet_* models (torchvision's ImageNet architectures) are tested against
    # torchvision itself in tests/test_pretrained.py.
    cifar_models = set(models.MODELS) - set(models.IMAGENET_MODELS)
    assert cifar_models == set(REFERENCE_PARAMS_10) == set(TEST_WIDTHS)
    assert set(models.IMAGENET_MODELS) == {"imagenet_" + name for name in (
        "resnet18", "resnet50", "resnet152", "vgg16", "vgg16_bn", "mobilenet_v2", "efficientnet_b0")}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_10))
def test_parameter_count_of_the_published_cifar_variant(name):
    assert models.param_count(models.build(name, num_classes=10)) == REFERENCE_PARAMS_10[name]


# XLA:CPU spends its compile time optimising code; these tiny steps do not need it.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


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
    return smoke_config(model=name, width=TEST_WIDTHS[name], augment=False, num_epochs=8,
                        learning_rate=1e-2, **overrides)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "label": np.array([3, 7])}


# Which models compile and run a train step here. ResNet9 trains in most of the suite
# (tests/test_steps.py, the smoke runs); ResNet152 is ResNet50's bottleneck blocks, more of
# them (3-8-36-3 instead of 3-4-6-3), so ResNet50 runs that code and ResNet152's step is
# only traced for shapes (the test below): compiling it took about a minute on 2 CPU cores.
# EfficientNet-B0 (the only one with dropout and stochastic depth) compiles for about a
# minute too: it trains in the slow set and is traced in the quick run.
TRAINED = {"resnet18": (), "resnet50": (), "vgg16": (), "mobilenet_v2": (), "efficientnet_b0": (pytest.mark.slow,)}


def _abstract_state(config):
    return checkpoint.abstract_train_state(config, steps_per_epoch=1)


@pytest.mark.parametrize("name", ["resnet152", "efficientnet_b0"])
def test_the_models_not_trained_here_trace_their_train_step(name):
    """The whole train step (forward in train mode, gradients, optimizer) of the models not
    trained in the quick run, traced for shapes only: the new state has the old one's
    structure, shapes and dtypes. (The others compile theirs in the next test, ResNet9 in
    most of the suite.)"""
    config = _config(name)
    state = _abstract_state(config)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _batch())
    new, metrics = jax.eval_shape(train_step, state, batch, jax.random.key(0))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert metrics["loss"].shape == () and metrics["loss"].dtype == jnp.float32
    assert models.param_count(models.build(name, 10, TEST_WIDTHS[name])) == sum(
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


@pytest.mark.parametrize("name", list(TEST_WIDTHS))
def test_config_file_per_model(name):
    path = REPO / "configs" / ("default.py" if name == "resnet9" else f"{name}.py")
    config = load_config_file(str(path))
    validate_config(config)
    assert config.model == name and config.max_param_mb == 100.0


def test_budget_refuses_a_model_over_max_param_mb():
    config = load_config_file(str(REPO / "configs" / "resnet152.py"))  # 233.4 MB
    with pytest.raises(ConfigError, match=r"model resnet152 .* 233\.4 MB .*--config\.max_param_mb"):
        models.check_param_budget(config)
    with config.unlocked():
        config.max_param_mb = 0.0  # disabled
    models.check_param_budget(config)
    models.check_param_budget(load_config_file(str(REPO / "configs" / "resnet50.py")))  # 94.8 MB: fits


def test_unknown_model_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="model='resnet1000' is unknown; set --config.model to one of resnet9, "):
        models.check_param_budget(smoke_config(model="resnet1000"))


def test_train_cli_refuses_an_oversized_model_before_writing(tmp_path, capsys):
    workdir = tmp_path / "run"
    code = main(["--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(workdir),
                 "--config.max_param_mb=0.1"])  # the smoke ResNet9 has 0.48 MB
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: model resnet9 ")
    assert "MB" in err and "--config.max_param_mb" in err
    assert not workdir.exists()


def test_list_table_has_every_model(monkeypatch):
    # The FLOPs column compiles forwards: check it on the two smallest models only.
    monkeypatch.setattr(zoo, "MODELS", {k: zoo.MODELS[k] for k in ("resnet9", "mobilenet_v2")})
    lines = zoo.table(num_classes=100).splitlines()
    assert lines[2].startswith("| `resnet9` | 7,598,820 | 30.4 | 0.209 |")
    assert lines[3].startswith("| `mobilenet_v2` | 2,412,212 | 9.6 |")


def test_list_command(monkeypatch, capsys):
    """`python -m cifar_jax.zoo --list` prints the table (here of one model: the FLOPs
    column compiles a forward pass per model), and without --list just the names."""
    assert zoo.main([]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "models: " + ", ".join(zoo.MODELS)
    monkeypatch.setattr(zoo, "MODELS", {"resnet9": zoo.MODELS["resnet9"]})
    assert zoo.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | parameters (100 classes) |") and len(lines) == 3
    assert lines[2].startswith("| `resnet9` | 7,598,820 | 30.4 | 0.209 |")
