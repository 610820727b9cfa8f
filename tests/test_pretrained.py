"""cifar_jax.pretrained and the imagenet_* models against real torchvision, on CPU.

torchvision runs here through tests/torchvision_cpu.py. Every model is randomly initialised
by torchvision, its BatchNorm statistics moved by train-mode passes (so they are not 0/1),
saved as a state_dict and loaded by cifar_jax; the eval logits must agree. Float32
throughout. Tolerance: 1e-4 of the largest |logit|; measured errors are 6e-7 (MobileNetV2,
EfficientNet-B0) to 4.4e-6 (ResNet152) of it, from float32 summation order in convolutions
and matmuls, so 1e-4 leaves a 20x margin (a wrong padding, pool, flatten order or
activation would be a change of another order; not measured per fault).
"""
import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import models, pretrained, torch_hub
from cifar_jax.config import load_config_file, validate_config
from cifar_jax.errors import CifarJaxError, ConfigError
from cifar_jax.models.layers import adaptive_avg_pool
from tests.conftest import REPO
from tests.file_server import FileServer
from tests.torchvision_cpu import import_torchvision

torch = pytest.importorskip("torch")
RELATIVE_TOLERANCE = 1e-4
# (architecture, input size): 32x32 reaches a 1x1 map in each (VGG's adaptive pool then
# replicates it to 7x7; test_adaptive_avg_pool_is_torchs covers other map sizes); resnet50
# also at 224, the size the pretrained models are trained at. On 2 loaded CPU cores
# resnet152 (70 s), the two VGGs (35 s each) and resnet50 at 224 (25 s) are the slow
# part: marked slow (CI runs them with -m slow); vgg16_bn keeps the VGG code in the quick run.
CASES = [("resnet18", 32), ("resnet50", 32), ("vgg16_bn", 32), ("mobilenet_v2", 32), ("efficientnet_b0", 32),
         pytest.param("resnet50", 224, marks=pytest.mark.slow), pytest.param("resnet152", 32, marks=pytest.mark.slow),
         pytest.param("vgg16", 32, marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def tv():
    return import_torchvision()


def _torch_model(tv, arch, size=32, seed=0):
    """A random torchvision model whose BatchNorm statistics moved away from 0 and 1."""
    torch.manual_seed(seed)
    model = getattr(tv.models, arch)(weights=None)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, size, size) * 2 + 0.5)
    return model.eval()


# XLA:CPU spends most of a deep model's compile time optimising code that runs once here.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _logits(model, variables, images_nchw):
    x = jnp.asarray(images_nchw.numpy().transpose(0, 2, 3, 1))
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile(FAST_COMPILE)
    return np.asarray(forward(variables, x))


@pytest.fixture(scope="module")
def resnet18_file(tv, tmp_path_factory):
    """(path, state_dict) of a random torchvision resnet18 with moved statistics."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    state_dict = _torch_model(tv, "resnet18").state_dict()
    torch.save(state_dict, path)
    return path, state_dict


def _one_line(error, *fragments):
    """The message of a pytest.raises result (or of a caught warning), checked to be one line
    holding every fragment."""
    message = str(error.value if hasattr(error, "value") else error.message)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize("arch, size", CASES)
def test_eval_logits_equal_torchvision(tv, arch, size, tmp_path):
    torch_model = _torch_model(tv, arch, size)
    path = tmp_path / f"{arch}.pth"
    torch.save(torch_model.state_dict(), path)
    model, variables = pretrained.load_torchvision(arch, path)
    # Every parameter is there: the count is torchvision's.
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == sum(
        p.numel() for p in torch_model.parameters())
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        expected = torch_model(images).numpy()
    ours = _logits(model, variables, images)
    assert ours.shape == (2, 1000) and ours.dtype == np.float32
    error = np.abs(ours - expected).max() / np.abs(expected).max()
    print(f"{arch} {size}x{size}: max |error| / max |logit| = {error:.2e}")
    assert error < RELATIVE_TOLERANCE, (arch, size, error)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 9, 14])
def test_adaptive_avg_pool_is_torchs(size):
    x = np.random.default_rng(size).normal(size=(2, 4, size, size + 1)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (7, 7)).numpy().transpose(0, 2, 3, 1)
    ours = np.asarray(adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), (7, 7)))
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


def test_head_replacement_keeps_the_backbone(resnet18_file):
    path, state_dict = resnet18_file
    _, original = pretrained.load_torchvision("resnet18", path)
    model, variables = pretrained.load_torchvision("imagenet_resnet18", path, num_classes=10)
    assert model.num_classes == 10
    head = variables["params"][models.HEAD_KEY]
    assert head["kernel"].shape == (512, 10) and head["bias"].shape == (10,)
    assert not np.any(head["kernel"]) and not np.any(head["bias"])  # zeros, as BiT
    for collection in ("params", "batch_stats"):
        for layer, leaves in original[collection].items():
            if layer != models.HEAD_KEY:
                for leaf, value in leaves.items():
                    np.testing.assert_array_equal(variables[collection][layer][leaf], value)
    np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"],
                                  state_dict["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    # The tree is exactly the one model.init makes: create_train_state can use it as is.
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes) == jax.tree.map(lambda v: (v.shape, v.dtype), variables)


def test_initial_variables_follow_the_config(resnet18_file):
    config = load_config_file(str(REPO / "configs" / "default.py"))
    assert pretrained.initial_variables(config, jax.random.key(0)) is None  # pretrained="": a fresh init
    with config.unlocked():
        config.model, config.num_classes, config.pretrained = "imagenet_resnet18", 10, str(resnet18_file[0])
    validate_config(config)
    variables = pretrained.initial_variables(config, jax.random.key(0))
    assert variables["params"]["classifier"]["kernel"].shape == (512, 10)
    assert set(variables) == {"params", "batch_stats"}


def test_the_cifar_stem_takes_every_layer_of_the_same_name_and_shape(resnet18_file):
    """torchvision resnet18's weights in the zoo's CIFAR ResNet18 (config model "resnet18"):
    bn1 and layer1..layer4 come from the file; the 3x3 stem conv (7x7 in the file) and the
    10-class head (1000 in the file) start fresh, and one warning names them."""
    path, state_dict = resnet18_file
    config = load_config_file(str(REPO / "configs" / "default.py"))
    with config.unlocked():
        config.model, config.num_classes, config.pretrained = "resnet18", 10, str(path)
    validate_config(config)
    with pytest.warns(pretrained.PretrainedWarning) as caught:
        variables = pretrained.initial_variables(config, jax.random.key(3))
    assert len(caught) == 1
    _one_line(caught[0], "resnet18 starts from torchvision resnet18's weights but for 2 layers",
              "fresh: conv1, classifier (the head at zeros)")
    imagenet = pretrained.state_dict_to_variables("resnet18", state_dict)  # every layer, as torchvision's
    loaded = [layer for layer in imagenet["params"] if layer not in ("conv1", "classifier")]
    assert {"bn1", "layer1_0_conv1", "layer4_1_bn2", "layer2_0_downsample_0"} <= set(loaded)
    for collection in ("params", "batch_stats"):
        for layer in loaded:
            for leaf, value in imagenet[collection].get(layer, {}).items():
                np.testing.assert_array_equal(variables[collection][layer][leaf], value)
    conv1 = np.asarray(variables["params"]["conv1"]["kernel"])  # PyTorch's init, as kuangliu's
    assert conv1.shape == (3, 3, 3, 64) and 0.9 / np.sqrt(27) < np.abs(conv1).max() <= 1 / np.sqrt(27)
    head = variables["params"][models.HEAD_KEY]
    assert head["kernel"].shape == (512, 10) and not np.any(head["kernel"]) and not np.any(head["bias"])
    model = models.build("resnet18", 10)
    assert (model.stem, model.initialization) == ("cifar", "pytorch")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes) == jax.tree.map(lambda v: (v.shape, v.dtype), variables)


def test_config_checks_are_one_line():
    config = load_config_file(str(REPO / "configs" / "default.py"))
    with config.unlocked():
        config.pretrained = "ResNet50_Weights.IMAGENET1K_V2"
    with pytest.raises(ConfigError) as error:
        validate_config(config)  # model resnet9
    _one_line(error, "imagenet_resnet50")
    with config.unlocked():
        config.model = "imagenet_resnet18"
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    _one_line(error, "holds resnet50 weights", "--config.model=imagenet_resnet50")
    with config.unlocked():
        config.model = "imagenet_resnet50"
    validate_config(config)
    with pytest.raises(ConfigError) as error:
        models.build("imagenet_resnet50", 100, width=0.5)
    _one_line(error, "--config.width=1.0")
    # The CIFAR variants take the weights of their torchvision architecture, at width 1.0.
    with config.unlocked():
        config.model = "resnet50"
    validate_config(config)
    for model, weights, fragments in [
            ("resnet18", "ResNet50_Weights.IMAGENET1K_V2", ("holds resnet50 weights", "--config.model=resnet50")),
            ("vgg16", "VGG16_Weights.IMAGENET1K_V1", ("holds vgg16 weights, not vgg16_bn",
                                                      "--config.model=imagenet_vgg16")),
            ("resnet9", "ResNet18_Weights.IMAGENET1K_V1", ("torchvision's layers", "resnet18, resnet50"))]:
        with config.unlocked():
            config.model, config.pretrained = model, weights
        with pytest.raises(ConfigError) as error:
            validate_config(config)
        _one_line(error, *fragments)
    with config.unlocked():
        config.model, config.pretrained, config.width = "vgg16", "VGG16_BN_Weights.IMAGENET1K_V1", 0.5
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    _one_line(error, "widths of torchvision's vgg16_bn", "--config.width=1.0")


def _load_edited(tmp_path, state_dict, edit):
    edited = dict(state_dict)
    edit(edited)
    path = tmp_path / "edited.pth"
    torch.save(edited, path)
    return pretrained.load_torchvision("resnet18", path)


def test_an_extra_key_is_named(resnet18_file, tmp_path):
    with pytest.raises(CifarJaxError) as error:
        _load_edited(tmp_path, resnet18_file[1], lambda d: d.update({"layer5.0.conv1.weight": torch.zeros(1)}))
    _one_line(error, "unexpected key 'layer5.0.conv1.weight'")


def test_a_missing_key_is_named(resnet18_file, tmp_path):
    with pytest.raises(CifarJaxError) as error:
        _load_edited(tmp_path, resnet18_file[1], lambda d: d.pop("layer3.1.bn2.running_var"))
    _one_line(error, "missing key 'layer3.1.bn2.running_var'")


def test_a_wrong_shape_names_both_shapes(resnet18_file, tmp_path):
    with pytest.raises(CifarJaxError) as error:
        _load_edited(tmp_path, resnet18_file[1], lambda d: d.update({"bn1.weight": torch.ones(63)}))
    _one_line(error, "'bn1.weight'", "(63,)", "(64,)")


def test_num_batches_tracked_is_optional(resnet18_file, tmp_path):
    def drop(d):
        for key in [k for k in d if k.endswith("num_batches_tracked")]:
            del d[key]
    _, variables = _load_edited(tmp_path, resnet18_file[1], drop)
    _, original = pretrained.load_torchvision("resnet18", resnet18_file[0])
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), variables, original))


def test_weights_of_another_architecture_are_refused(resnet18_file):
    with pytest.raises(CifarJaxError) as error:
        pretrained.load_torchvision("resnet50", resnet18_file[0])
    _one_line(error, "not torchvision's resnet50", "missing key 'layer1.0.bn3.weight' and 164 more")


def test_a_whole_pickled_model_is_refused(tv, tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(tv.models.resnet18(weights=None), path)
    with pytest.raises(CifarJaxError) as error:
        pretrained.load_torchvision("resnet18", path)
    _one_line(error, "torch.save(model.state_dict()")


def test_without_torch_the_error_says_how_to_install(monkeypatch, resnet18_file):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(CifarJaxError) as error:
        pretrained.load_torchvision("resnet18", resnet18_file[0])
    _one_line(error, 'pip install "cifar-jax[torch]"')


def test_weight_file_names_are_torchvisions(tv):
    """The table is torchvision's own: each name's url ends in the file name, and the size
    that bounds its download is torchvision's."""
    for name, (arch, file_name) in torch_hub.WEIGHTS.items():
        enum, member = name.split(".")
        assert getattr(tv.models, enum)[member].url == torch_hub.BASE_URL + file_name
        assert torch_hub.FILE_MIB[file_name] == getattr(tv.models, enum)[member].meta["_file_size"]
        assert arch in models.TORCHVISION
    for alias, name in torch_hub.DEFAULTS.items():
        enum = alias.split(".")[0]
        assert getattr(tv.models, enum).DEFAULT.url == torch_hub.BASE_URL + torch_hub.WEIGHTS[name][1]
    assert torch_hub.hash_prefix("efficientnet_b0_rwightman-7f5810bc.pth") == "7f5810bc"


@pytest.fixture
def hub(tmp_path, monkeypatch, resnet18_file):
    """TORCH_HOME in tmp_path; ResNet18_Weights.IMAGENET1K_V1 is the random resnet18 file,
    named as torch.hub names files (its sha256 prefix after the "-"); no real server."""
    body = resnet18_file[0].read_bytes()
    file_name = f"resnet18-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(torch_hub.WEIGHTS, "ResNet18_Weights.IMAGENET1K_V1", ("resnet18", file_name))
    monkeypatch.setattr(torch_hub, "BASE_URL", "http://127.0.0.1:9/models/")  # refused, if ever asked
    return dataclasses.make_dataclass("Hub", ["body", "file_name", "folder"])(
        body, file_name, tmp_path / "torch" / "hub" / "checkpoints")


def test_a_weight_name_is_found_in_torch_home(hub, resnet18_file):
    hub.folder.mkdir(parents=True)
    (hub.folder / hub.file_name).write_bytes(hub.body)
    _, by_name = pretrained.load_torchvision("resnet18", "ResNet18_Weights.DEFAULT")
    _, by_path = pretrained.load_torchvision("resnet18", resnet18_file[0])
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), by_name, by_path))


def test_a_missing_weight_file_is_downloaded_and_checked(hub, monkeypatch):
    with FileServer(hub.body, path=f"/models/{hub.file_name}") as server:
        monkeypatch.setattr(torch_hub, "BASE_URL", server.url("/models/"))
        pretrained.load_torchvision("resnet18", "ResNet18_Weights.IMAGENET1K_V1", num_classes=10)
        pretrained.load_torchvision("resnet18", "ResNet18_Weights.IMAGENET1K_V1")  # now from the cache
        assert len(server.gets()) == 1
    # No .part, no .lock; the marker that remembers the file's check.
    assert sorted(p.name for p in hub.folder.iterdir()) == [hub.file_name, hub.file_name + torch_hub.VERIFIED_SUFFIX]
    assert (hub.folder / hub.file_name).read_bytes() == hub.body


def test_a_wrong_sha256_deletes_the_download(hub, monkeypatch):
    wrong = "resnet18-00000000.pth"
    monkeypatch.setitem(torch_hub.WEIGHTS, "ResNet18_Weights.IMAGENET1K_V1", ("resnet18", wrong))
    with FileServer(b"not the weights" * 1000, path=f"/models/{wrong}") as server:
        monkeypatch.setattr(torch_hub, "BASE_URL", server.url("/models/"))
        with pytest.raises(CifarJaxError) as error:
            pretrained.load_torchvision("resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    _one_line(error, "sha256", "00000000", "deleted", server.url(f"/models/{wrong}"))
    assert [p.name for p in hub.folder.iterdir()] in ([], [f"{wrong}.lock"])


def test_offline_and_unknown_names_are_one_line(hub):
    with pytest.raises(CifarJaxError) as error:
        pretrained.load_torchvision("resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    _one_line(error, "cannot download http://127.0.0.1:9/models/", str(hub.folder), "--config.pretrained=PATH")
    with pytest.raises(CifarJaxError) as error:
        pretrained.load_torchvision("resnet18", "ResNet18_Weights.IMAGENET1K_V9")
    _one_line(error, "unknown torchvision weights")
    with pytest.raises(CifarJaxError) as error:
        pretrained.load_torchvision("resnet18", "no/such/file.pth")
    _one_line(error, "no such file")


@pytest.mark.slow  # about 90 s on 2 loaded cores: compiling EfficientNet's training forward
def test_train_mode_uses_the_mask_and_the_dropout_rng():
    """EfficientNet-B0's training forward: dropout and per-sample stochastic depth follow the
    'dropout' key, and a masked (padding) example leaves the BatchNorm statistics alone."""
    model = models.build("imagenet_efficientnet_b0", num_classes=10)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(3, 32, 32, 3)).astype(np.float32))
    variables = jax.jit(lambda: model.init(jax.random.key(0), images[:1], train=False))()

    def train(images, mask, key):
        return model.apply(variables, images, train=True, mask=mask, mutable=["batch_stats"], rngs={"dropout": key})

    step = jax.jit(train).lower(images, jnp.ones(3), jax.random.key(0)).compile(FAST_COMPILE)
    a, stats = step(images, jnp.array([1.0, 1.0, 0.0]), jax.random.key(1))
    b, _ = step(images, jnp.array([1.0, 1.0, 0.0]), jax.random.key(2))
    assert not np.allclose(a, b)  # another key, other dropped units and blocks
    padded = images.at[2].set(-images[2])  # what a masked example holds must not matter
    _, same = step(padded, jnp.array([1.0, 1.0, 0.0]), jax.random.key(1))
    _, moved = step(padded, jnp.ones(3), jax.random.key(1))
    for x, y, z in zip(jax.tree.leaves(stats), jax.tree.leaves(same), jax.tree.leaves(moved)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(x, z) for x, z in zip(jax.tree.leaves(stats), jax.tree.leaves(moved)))
