"""PyTorch state_dict <-> Flax variables (cifar_jax.convert): exact round trips, safe file
loading with one-line errors, no torch import unless needed, and size parity with the seed's
checkpoint (7,598,820 parameters; a torch.save'd state_dict of about 30.4 MB)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import flax.serialization  # noqa: E402
import jax  # noqa: E402

from cifar_jax import convert  # noqa: E402
from cifar_jax import reference as ref  # noqa: E402
from cifar_jax.errors import CifarJaxError  # noqa: E402
from tests.conftest import REPO  # noqa: E402

SEED_PARAMETERS = 7_598_820  # ResNet9 at width 1, 100 classes


def _trained_looking(model, num_batches_tracked=7):
    """Every tensor random (BatchNorm buffers too), as after training."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(num_batches_tracked)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def seed_model():
    return _trained_looking(ref.ResNet9(3, 100))


def test_torch_to_flax_to_torch_is_exact(seed_model):
    state_dict = seed_model.state_dict()
    variables = convert.state_dict_to_variables(state_dict)
    back = convert.variables_to_state_dict(variables, num_batches_tracked=7)
    assert list(back) == list(state_dict)  # same keys, same order
    for key, tensor in state_dict.items():
        assert back[key].dtype == tensor.dtype and back[key].shape == tensor.shape, key
        assert torch.equal(back[key], tensor), key
    # ... and PyTorch takes it as it is.
    ref.ResNet9(3, 100).load_state_dict(back, strict=True)


def test_layouts_and_names(seed_model):
    variables = convert.state_dict_to_variables(seed_model.state_dict())
    conv = seed_model.res2[1][0].weight.detach().numpy()  # OIHW
    np.testing.assert_array_equal(variables["params"]["res2"]["ConvBlock_1"]["Conv_0"]["kernel"], conv.transpose(2, 3, 1, 0))
    linear = seed_model.classifier[2].weight.detach().numpy()  # (out, in)
    np.testing.assert_array_equal(variables["params"]["classifier"]["kernel"], linear.T)
    bn = seed_model.conv5[1]
    stats = variables["batch_stats"]["conv5"]["BatchNorm_0"]
    np.testing.assert_array_equal(stats["var"], bn.running_var.numpy())
    np.testing.assert_array_equal(variables["params"]["conv5"]["BatchNorm_0"]["scale"], bn.weight.detach().numpy())
    # The Flax tree is exactly the one cifar_jax's ResNet9 creates.
    from cifar_jax.models import ResNet9

    shapes = jax.eval_shape(lambda: ResNet9(100).init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)), train=False))
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, variables)


def test_flax_to_torch_to_flax_is_exact():
    from cifar_jax.models import ResNet9

    # Random values in the model's tree (eval_shape: no init to compile, which takes ~20 s here).
    shapes = jax.eval_shape(lambda: ResNet9(10, width=0.25).init(jax.random.key(3), np.zeros((1, 32, 32, 3)), train=False))
    rng = np.random.default_rng(3)
    variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    again = convert.state_dict_to_variables(convert.variables_to_state_dict(variables))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), dict(variables), again))


def test_parameter_count_and_file_size_match_the_seed(seed_model, tmp_path):
    assert ref.count_parameters(seed_model) == SEED_PARAMETERS
    variables = convert.state_dict_to_variables(seed_model.state_dict())
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == SEED_PARAMETERS
    torch.save(seed_model.state_dict(), tmp_path / "model.pth")
    torch_bytes = os.path.getsize(tmp_path / "model.pth")
    # The fair comparison includes batch_stats: the state_dict holds the running statistics
    # too (they are 0.07 % of the bytes; without them the sizes are as close).
    flax_bytes = len(flax.serialization.to_bytes(variables))
    raw_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(variables))
    assert abs(flax_bytes - torch_bytes) / torch_bytes < 0.02, (flax_bytes, torch_bytes)
    assert abs(raw_bytes - torch_bytes) / torch_bytes < 0.02, (raw_bytes, torch_bytes)
    assert 30_300_000 < torch_bytes < 30_600_000  # the seed's "29M" of `du -h` (MiB)
    if os.environ.get("CIFAR_JAX_PARITY_VERBOSE"):
        print(f"\nstate_dict file {torch_bytes:,} B, Flax msgpack {flax_bytes:,} B, raw float32 {raw_bytes:,} B")


def test_torch_weight_files_load_and_save(tmp_path):
    model = _trained_looking(ref.ResNet9(3, 10, width=0.25), num_batches_tracked=3)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    variables = convert.load_torch_weights(tmp_path / "weights.pth", num_classes=10, width=0.25)
    assert variables["params"]["classifier"]["kernel"].shape == (128, 10)
    inferred = convert.load_torch_weights(str(tmp_path / "weights.pth"))  # num_classes, width read off the file
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), variables, inferred))
    convert.save_torch_weights(variables, tmp_path / "back.pth", num_batches_tracked=3)
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    for key, tensor in model.state_dict().items():
        assert torch.equal(back[key], tensor), key


def test_wrapped_and_half_precision_state_dicts_are_accepted():
    model = _trained_looking(ref.ResNet9(3, 10, width=0.125))
    wrapped = torch.nn.DataParallel(model).state_dict()  # keys "module.conv1.0.weight", ...
    assert next(iter(wrapped)).startswith("module.")
    plain = convert.state_dict_to_variables(model.state_dict())
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), plain, convert.state_dict_to_variables(wrapped)))
    half = convert.state_dict_to_variables(model.half().state_dict())
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(half))


def _one_line_error(call, *fragments):
    with pytest.raises(CifarJaxError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_whole_pickled_model_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "model_Resnet9final.pth"
    torch.save(ref.ResNet9(3, 10, width=0.125), path)  # as the seed saved its model
    _one_line_error(lambda: convert.load_torch_weights(path), "torch.save(model.state_dict()", str(path))


def test_mismatches_name_the_key_and_shapes(tmp_path):
    state_dict = ref.ResNet9(3, 10, width=0.25).state_dict()
    _one_line_error(lambda: convert.state_dict_to_variables(state_dict, num_classes=10, width=0.5),
                    "'conv1.0.weight'", "(8, 3, 3, 3)", "(16, 3, 3, 3)", "width=0.25")
    _one_line_error(lambda: convert.state_dict_to_variables(state_dict, num_classes=100, width=0.25),
                    "'classifier.2.weight'", "(10, 128)", "(100, 128)")
    missing = {k: v for k, v in state_dict.items() if k != "res2.1.0.bias"}
    _one_line_error(lambda: convert.state_dict_to_variables(missing), "missing keys 'res2.1.0.bias'")
    extra = dict(state_dict, **{"fc.weight": torch.zeros(3)})
    _one_line_error(lambda: convert.state_dict_to_variables(extra), "unexpected keys 'fc.weight'")
    _one_line_error(lambda: convert.state_dict_to_variables(dict(state_dict, **{"conv1.0.bias": torch.zeros(8, dtype=torch.long)})),
                    "'conv1.0.bias'", "int64")


def test_unreadable_files_are_one_line_errors(tmp_path):
    _one_line_error(lambda: convert.load_torch_weights(tmp_path / "nothing.pth"), "no file")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file at all" * 10)
    _one_line_error(lambda: convert.load_torch_weights(tmp_path / "junk.pth"), "not a readable PyTorch weights file")
    checkpoint = {"model_state_dict": ref.ResNet9(3, 10, width=0.125).state_dict(), "epoch": 3}
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    _one_line_error(lambda: convert.load_torch_weights(tmp_path / "checkpoint.pth"), "'model_state_dict'", "state_dict()")


def test_missing_torch_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    _one_line_error(convert.import_torch, "pip install 'cifar-jax[torch]'")


def test_importing_cifar_jax_and_convert_does_not_import_torch():
    code = "import sys, cifar_jax, cifar_jax.convert; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-2000:]
