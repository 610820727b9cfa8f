"""The other models of the seed report (cifar_jax.models): the registry, their sizes, their
config files, the max_param_mb budget and the zoo's table (their training:
tests/test_zoo_training.py)."""
import re

import jax
import jax.numpy as jnp
import pytest

from cifar_jax import models, zoo
from cifar_jax.checkpoint.layout import RENAMED_MODELS
from cifar_jax.config import load_config_file, validate_config
from cifar_jax.errors import ConfigError
from cifar_jax.train import main
from tests.checkpoint_runs import smoke_config
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
    # cifar10-airbench legacy/airbench94.py make_net() (its frozen whitening kernel and BatchNorm
    # weights are parameters too): 312 + 50,944 + 738,304 + 1,180,672 + 2,560.
    "airbench94": 1_972_792,
}


def _documented_counts(doc: str) -> dict[str, int]:
    """{model: parameters} of the table rows "| `name` | 1,234 | ..." of docs/`doc`."""
    text = (REPO / "docs" / doc).read_text()
    return {name: int(count.replace(",", "")) for name, count in re.findall(r"^\| `(\w+)` \|.*?([\d,]{7,}) \|",
                                                                              text, re.M)}


# The zoo table of docs/models.md (100 classes) and the models table of docs/transfer.md
# (1000 classes): every registered model at full width.
DOCUMENTED = {**{name: (100, count) for name, count in _documented_counts("models.md").items()},
              **{name: (1000, count) for name, count in _documented_counts("transfer.md").items()}}


def test_registry_lists_every_model():
    # The imagenet_* models (torchvision's ImageNet architectures) are tested against
    # torchvision itself in tests/test_pretrained.py.
    cifar_models = set(models.MODELS) - set(models.IMAGENET_MODELS)
    assert cifar_models == set(REFERENCE_PARAMS_10)
    assert set(models.IMAGENET_MODELS) == {"imagenet_" + name for name in (
        "resnet18", "resnet50", "resnet152", "vgg16", "vgg16_bn", "mobilenet_v2", "efficientnet_b0")}
    assert set(DOCUMENTED) == set(models.MODELS)
    # The models whose checkpoints of cifar_jax 0.1.0 are refused: those whose layers 0.2.0 renamed.
    assert RENAMED_MODELS == set(models.CIFAR_MODELS)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_parameter_count_is_the_documented_one_and_the_published_variants(name):
    """From shapes only (jax.eval_shape), at 10 classes: the count of the definition followed
    (REFERENCE_PARAMS_10, for the CIFAR models); with the head at the documented classes:
    the documents' count."""
    classes, documented = DOCUMENTED[name]
    shapes = jax.eval_shape(lambda: models.build(name, num_classes=10).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
    count = sum(x.size for x in jax.tree.leaves(shapes))
    assert count == REFERENCE_PARAMS_10.get(name, count)
    per_class = sum(x.size for x in jax.tree.leaves(shapes[models.HEAD_KEY])) // 10  # kernel column [+ bias]
    assert count + (classes - 10) * per_class == documented


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_10))
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
