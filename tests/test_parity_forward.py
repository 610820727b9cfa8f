"""Forward parity: the seed's PyTorch ResNet9 with random weights, converted to Flax, gives
the same logits in training and inference mode, and the same BatchNorm running statistics
after a training forward pass (PyTorch updates running_var with the unbiased variance)."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cifar_jax import reference as ref  # noqa: E402
from cifar_jax.augment import normalize  # noqa: E402
from cifar_jax.convert import state_dict_to_variables, variables_to_state_dict  # noqa: E402
from cifar_jax.models import ResNet9  # noqa: E402

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
VERBOSE = bool(os.environ.get("CIFAR_JAX_PARITY_VERBOSE"))  # print the measured errors (pytest -s)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """PyTorch's spinning CPU threads next to XLA's slow both down on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _max_relative(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def models():
    """The full seed model (100 classes, width 1) with PyTorch's init, and BatchNorm affine
    parameters and running statistics drawn at random so that every one of them matters."""
    torch.manual_seed(0)
    model = ref.ResNet9(3, 100)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    return model, state_dict_to_variables(model.state_dict()), images


def test_inputs_are_normalised_alike(models):
    _, _, images = models
    theirs = ref.preprocess(torch.as_tensor(images), MEAN, STD).permute(0, 2, 3, 1).numpy()
    ours = np.asarray(normalize(jnp.asarray(images), MEAN, STD))
    assert np.abs(ours - theirs).max() < 1e-6  # ToTensor + Normalize vs normalize: 1 ulp at most


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_logits_match(models, train):
    model, variables, images = models
    model = copy.deepcopy(model).train(train)  # a training pass updates the running statistics
    with torch.no_grad():
        theirs = model(ref.preprocess(torch.as_tensor(images), MEAN, STD)).numpy()
    apply = jax.jit(lambda v, x: ResNet9(100).apply(v, x, train=train, mutable=["batch_stats"] if train else False))
    ours = apply(variables, normalize(jnp.asarray(images), MEAN, STD))
    ours = ours[0] if train else ours
    error = _max_relative(ours, theirs)
    if VERBOSE:
        print(f"\nlogits ({'train' if train else 'eval'} mode): max relative error {error:.1e}")
    assert error < 1e-4
    # Not trivially equal: the two modes give different logits.
    assert np.abs(theirs).max() > 0.1


def test_batchnorm_running_statistics_after_a_training_pass(models):
    original, variables, images = models
    model = copy.deepcopy(original).train()
    with torch.no_grad():
        model(ref.preprocess(torch.as_tensor(images), MEAN, STD))
    _, updates = jax.jit(lambda v, x: ResNet9(100).apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, normalize(jnp.asarray(images), MEAN, STD))
    ours = variables_to_state_dict({"params": variables["params"], "batch_stats": updates["batch_stats"]},
                                   num_batches_tracked=1)
    worst = 0.0
    for key, theirs in model.state_dict().items():
        if "running" in key:
            worst = max(worst, _max_relative(ours[key].numpy(), theirs.numpy()))
            assert not torch.equal(theirs, original.state_dict()[key])  # really updated
        if key.endswith("num_batches_tracked"):
            assert int(theirs) == int(ours[key]) == 1
    if VERBOSE:
        print(f"\nBatchNorm running statistics after one training pass: max relative error {worst:.1e}")
    # Below 1e-4 also rules out the biased variance: at res3 (2x2 maps, 8 images: n = 32
    # values per channel) it is 3 % smaller, which moves running_var by 0.1 x 3 % of the
    # batch variance.
    assert worst < 1e-4


def test_reference_crop_and_flip_are_torchvision_s():
    """cifar_jax.reference's crop + flip (torchvision's RandomCrop(32, padding=4,
    padding_mode="reflect") + RandomHorizontalFlip as tensor ops): every output is one of
    the 81 crops of the reflect-padded image, flipped or not, all of them drawn; and the
    reflect padding is the same as cifar_jax.augment's."""
    from cifar_jax.augment import reflect_pad

    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(image[None], (4, 4, 4, 4), mode="reflect")[0]
    ours = np.asarray(reflect_pad(jnp.asarray(image.permute(1, 2, 0).numpy())[None]))[0]
    np.testing.assert_array_equal(ours, padded.permute(1, 2, 0).numpy())
    candidates = torch.stack([padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)])
    candidates = torch.cat([candidates, candidates.flip(3)])  # (162, 3, 32, 32)
    out = ref.random_crop_flip(image.expand(1000, -1, -1, -1), torch.Generator().manual_seed(1))
    matches = (out[:, None] == candidates[None]).flatten(2).all(2)  # (1000, 162)
    assert bool((matches.sum(1) == 1).all())  # each output is exactly one candidate
    which = matches.float().argmax(1)
    assert len(set((which % 81).tolist())) == 81  # every offset drawn
    assert 0.45 < float((which >= 81).float().mean()) < 0.55  # flipped half the time
