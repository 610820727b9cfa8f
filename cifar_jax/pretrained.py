"""torchvision's pretrained weights in cifar_jax's ImageNet models (docs/transfer.md).

    model, variables = load_torchvision("resnet50", "ResNet50_Weights.IMAGENET1K_V2")
    logits = model.apply(variables, images_nhwc, train=False)   # torchvision's eval logits

`path` is a .pth state_dict (read with torch.load(weights_only=True)) or a torchvision
weight name, looked up in and downloaded to torch.hub's cache (cifar_jax.torch_hub).
Every key of the state_dict maps to one Flax variable and every variable to one key
(`num_batches_tracked` is ignored); each shape is checked. Flax names are torchvision's
module paths with "." -> "_" (cifar_jax/models/imagenet/common.py), so the mapping is
derived from the model's own variable tree, not a table.

`num_classes=N`, when the file's head has another size, replaces the final Linear (the
top-level "classifier") by a zero-initialised one, as BiT does: the first logits are all
equal (loss exactly log N); the backbone's gradient is zero at the first step and small
while the head is small, so a random head's gradients do not disturb the pretrained
features; and the start does not depend on an rng.

At training time, `--config.pretrained=PATH_OR_WEIGHT_NAME` starts from these weights:
`initial_variables(config, rng)` gives create_train_state its params and batch_stats.
torch is needed only here (to read .pth files): `pip install "cifar-jax[torch]"`.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax import models, torch_hub
from cifar_jax.errors import CifarJaxError, ConfigError
from cifar_jax.models.imagenet import ARCHITECTURES, HEAD_KEY, TORCHVISION_RENAMED

PREFIX = "imagenet_"
_TORCH_MISSING = 'reading torchvision weights needs PyTorch: pip install "cifar-jax[torch]"'
_BN = {"scale": "weight", "bias": "bias"}
_STATS = {"mean": "running_mean", "var": "running_var"}


def architecture(name: str) -> str:
    """"resnet50" from "resnet50" or "imagenet_resnet50"; CifarJaxError for anything else."""
    arch = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if arch not in ARCHITECTURES:
        raise CifarJaxError(f"no torchvision architecture {name!r}; use one of {', '.join(ARCHITECTURES)}")
    return arch


def check_pretrained(spec: str, model: str) -> None:
    """ConfigError when --config.pretrained cannot serve --config.model (no file access)."""
    if not spec:
        return
    if not model.startswith(PREFIX) or model[len(PREFIX):] not in ARCHITECTURES:
        raise ConfigError(f"pretrained={spec!r} needs a torchvision architecture: set --config.model to one of "
                          f"{', '.join(PREFIX + a for a in ARCHITECTURES)}")
    if torch_hub.is_weight_name(spec):
        arch, _ = torch_hub.weight_entry(spec)
        if PREFIX + arch != model:
            raise ConfigError(f"pretrained={spec} holds {arch} weights, not {model[len(PREFIX):]}; "
                              f"set --config.model={PREFIX}{arch} or pick {model[len(PREFIX):]} weights")


def load_torchvision(name: str, path: str | os.PathLike, num_classes: Optional[int] = None, dtype="float32"):
    """(model, variables) of the torchvision architecture `name` ("resnet50" or
    "imagenet_resnet50") with the weights of `path` (a .pth file or a weight name).

    num_classes None keeps the file's head; another value than the file's replaces it
    by a zero-initialised Linear (see the module docstring)."""
    arch = architecture(name)
    try:
        import torch  # noqa: F401  (only to say how to install it; convert reads the file)
    except ImportError:
        raise CifarJaxError(_TORCH_MISSING) from None
    from cifar_jax.convert import read_state_dict

    spec = os.fspath(path)
    if torch_hub.is_weight_name(spec):
        weights_arch, _ = torch_hub.weight_entry(spec)
        if weights_arch != arch:
            raise CifarJaxError(f"{spec} holds {weights_arch} weights, not {arch}")
    state_dict = read_state_dict(torch_hub.resolve(spec))
    head = state_dict.get(_torch_name(arch, HEAD_KEY) + ".weight")
    file_classes = int(head.shape[0]) if head is not None and len(head.shape) == 2 else 1000
    variables = state_dict_to_variables(arch, state_dict, file_classes)
    if num_classes is not None and num_classes != file_classes:
        kernel = variables["params"][HEAD_KEY]["kernel"]
        variables["params"][HEAD_KEY] = {"kernel": jnp.zeros((kernel.shape[0], num_classes), jnp.float32),
                                         "bias": jnp.zeros((num_classes,), jnp.float32)}
        file_classes = num_classes
    return models.build(PREFIX + arch, file_classes, 1.0, dtype), variables


def initial_variables(config, rng: jax.Array | None = None) -> Optional[dict]:
    """{"params", "batch_stats"} from `config.pretrained` for `config.model` with
    `config.num_classes` classes, or None when `config.pretrained` is empty (a fresh init).

    The tree is the one `model.init` makes for the config (same paths, shapes, float32).
    `rng` is unused: the replaced head starts at zeros."""
    spec = config.pretrained
    if not spec:
        return None
    check_pretrained(spec, config.model)
    _, variables = load_torchvision(config.model, spec, config.num_classes)
    return variables


def _torch_name(arch: str, flax_name: str) -> str:
    """torchvision's module path of a top-level Flax layer name."""
    for torch_name, renamed in TORCHVISION_RENAMED[arch].items():
        if renamed == flax_name:
            return torch_name
    return flax_name.replace("_", ".")


def _entries(arch: str, template: Mapping[str, Any]):
    """(torch key, torch shape, collection, flax layer, leaf, layout) of every variable."""
    for layer, leaves in template["params"].items():
        module = _torch_name(arch, layer)
        if "scale" in leaves:  # a norm: weight, bias, running statistics
            for leaf, suffix in _BN.items():
                yield f"{module}.{suffix}", leaves[leaf].shape, "params", layer, leaf, "vector"
            for leaf, suffix in _STATS.items():
                shape = template["batch_stats"][layer][leaf].shape
                yield f"{module}.{suffix}", shape, "batch_stats", layer, leaf, "vector"
            continue
        kernel = leaves["kernel"].shape
        if len(kernel) == 4:  # HWIO <- OIHW
            yield f"{module}.weight", (kernel[3], kernel[2], kernel[0], kernel[1]), "params", layer, "kernel", "oihw"
        else:  # (in, out) <- (out, in)
            yield f"{module}.weight", kernel[::-1], "params", layer, "kernel", "linear"
        if "bias" in leaves:
            yield f"{module}.bias", leaves["bias"].shape, "params", layer, "bias", "vector"


_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def _torch_order(entry) -> tuple:
    """Modules in natural order ("layer2" before "layer10"), each module's tensors in
    torch's order, so that messages name the first problem as a reader of the file would."""
    module, suffix = entry[0].rsplit(".", 1)
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", module)], _SUFFIXES.index(suffix)


def state_dict_to_variables(arch: str, state_dict: Mapping[str, Any], num_classes: int = 1000) -> dict:
    """Flax variables (float32) of `imagenet_<arch>` with `num_classes` classes from a
    torchvision state_dict; CifarJaxError naming the first missing or unexpected key, or
    the first shape mismatch with both shapes."""
    from cifar_jax.convert import strip_wrapper_prefix, to_numpy

    model = models.build(PREFIX + arch, num_classes)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    entries = sorted(_entries(arch, template), key=_torch_order)
    prefix = strip_wrapper_prefix([str(k) for k in state_dict])
    given = {str(k)[len(prefix):]: v for k, v in state_dict.items()}
    expected = {key for key, *_ in entries}
    norms = {key.rsplit(".", 1)[0] for key in expected if key.endswith(".running_mean")}
    unexpected = [key for key in given if key not in expected
                  and not (key.endswith(".num_batches_tracked") and key.rsplit(".", 1)[0] in norms)]
    missing = [key for key, *_ in entries if key not in given]
    if missing or unexpected:
        found = "; ".join(f"{what} key {keys[0]!r}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
                          for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        raise CifarJaxError(f"the state_dict is not torchvision's {arch}: {found}; pass {arch} weights, or set the "
                            "model to the weights' architecture")
    variables: dict = {"params": {}, "batch_stats": {}}
    for key, shape, collection, layer, leaf, layout in entries:
        array = to_numpy(key, given[key])
        if tuple(array.shape) != tuple(shape):
            raise CifarJaxError(f"state_dict key {key!r} has shape {tuple(array.shape)}, but {arch} with "
                                f"{num_classes} classes needs {tuple(shape)}; pass torchvision {arch} weights")
        array = array.astype(np.float32)
        if layout == "oihw":
            array = array.transpose(2, 3, 1, 0)
        elif layout == "linear":
            array = array.T
        variables[collection].setdefault(layer, {})[leaf] = jnp.asarray(np.ascontiguousarray(array))
    return variables
