"""torchvision's pretrained weights in cifar_jax's models (docs/transfer.md).

    model, variables = load_torchvision("resnet50", "ResNet50_Weights.IMAGENET1K_V2")
    logits = model.apply(variables, images_nhwc, train=False)   # torchvision's eval logits
    model, variables = load_torchvision("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 100, stem="cifar")

`path` is a .pth state_dict (read with torch.load(weights_only=True)) or a torchvision
weight name, looked up in and downloaded to torch.hub's cache (cifar_jax.torch_hub). The
zoo's models name their layers after torchvision's module paths with "." -> "_"
(cifar_jax/models/resnet.py, ...), so the mapping is derived from the model's own variable
tree, not a table. Two stems take the weights:

- "imagenet" (`imagenet_<arch>`, torchvision's model): every key of the state_dict maps to
  one Flax variable and every variable to one key (`num_batches_tracked` is ignored); each
  shape is checked.
- "cifar" (the zoo's CIFAR variant of the architecture, cifar_jax.models.CIFAR_OF: resnet18
  from resnet18's weights, ..., vgg16 from vgg16_bn's): every layer whose name and shapes are
  in the file is loaded; the others (a stem conv of another shape, the head, the layers only
  the CIFAR variant has) start fresh, from the model's init with `rng`, and a
  PretrainedWarning names them once.

`num_classes=N`, when the file's head has another size, replaces the final Linear (the
top-level "classifier") by a zero-initialised one, as BiT does: the first logits are all
equal (loss exactly log N); the backbone's gradient is zero at the first step and small
while the head is small, so a random head's gradients do not disturb the pretrained
features; and the start does not depend on an rng.

At training time, `--config.pretrained=PATH_OR_WEIGHT_NAME` starts `--config.model` (an
`imagenet_*` model or a CIFAR one with torchvision's layers) from these weights:
`initial_variables(config, rng)` gives create_train_state its params and batch_stats.
torch is needed only here (to read .pth files): `pip install "cifar-jax[torch]"`.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax import models, torch_hub
from cifar_jax.errors import CifarJaxError, ConfigError
from cifar_jax.models import CIFAR_OF, HEAD_KEY, IMAGENET_PREFIX, TORCHVISION, TORCHVISION_RENAMED
from cifar_jax.models.layers import STEMS

PREFIX = IMAGENET_PREFIX
_TORCH_MISSING = 'reading torchvision weights needs PyTorch: pip install "cifar-jax[torch]"'
_BN = {"scale": "weight", "bias": "bias"}
_STATS = {"mean": "running_mean", "var": "running_var"}


class PretrainedWarning(UserWarning):
    """Layers of a CIFAR-stem model that the torchvision weights could not give."""


def architecture(name: str) -> str:
    """"resnet50" from "resnet50" or "imagenet_resnet50"; CifarJaxError for anything else."""
    arch = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if arch not in TORCHVISION:
        raise CifarJaxError(f"no torchvision architecture {name!r}; use one of {', '.join(TORCHVISION)}")
    return arch


def model_name(arch: str, stem: str) -> str:
    """The registry's model of torchvision's `arch` with `stem`; CifarJaxError if there is none."""
    if stem == "imagenet":
        return PREFIX + arch
    if stem != "cifar":
        raise CifarJaxError(f"stem={stem!r}: use one of {', '.join(STEMS)}")
    for name, of in CIFAR_OF.items():
        if of == arch:
            return name
    raise CifarJaxError(f"no CIFAR-stem model has torchvision {arch}'s layers; those that do: "
                        + ", ".join(f"{name} ({of})" for name, of in CIFAR_OF.items()))


def torchvision_of(model: str) -> Optional[tuple[str, str]]:
    """(torchvision architecture, stem) whose weights `model` takes, or None."""
    if model.startswith(PREFIX) and model[len(PREFIX):] in TORCHVISION:
        return model[len(PREFIX):], "imagenet"
    return (CIFAR_OF[model], "cifar") if model in CIFAR_OF else None


def check_pretrained(spec: str, model: str, width: float = 1.0) -> None:
    """ConfigError when --config.pretrained cannot serve --config.model (no file access)."""
    if not spec:
        return
    found = torchvision_of(model)
    if found is None:
        raise ConfigError(f"pretrained={spec!r} needs a model with torchvision's layers: set --config.model to one "
                          f"of {', '.join([*models.IMAGENET_MODELS, *CIFAR_OF])}")
    arch, stem = found
    if width != 1.0:
        raise ConfigError(f"pretrained={spec!r} has the widths of torchvision's {arch}; width={width:g} is not "
                          "possible: set --config.width=1.0")
    if torch_hub.is_weight_name(spec):
        weights_arch, _ = torch_hub.weight_entry(spec)
        if weights_arch != arch:
            try:
                other = model_name(weights_arch, stem)
            except CifarJaxError:  # e.g. VGG16 weights for the CIFAR vgg16, which has BatchNorm
                other = PREFIX + weights_arch
            raise ConfigError(f"pretrained={spec} holds {weights_arch} weights, not {arch}; "
                              f"set --config.model={other} or pick {arch} weights")


def load_torchvision(name: str, path: str | os.PathLike, num_classes: Optional[int] = None, dtype="float32", *,
                     stem: str = "imagenet", rng: Optional[jax.Array] = None):
    """(model, variables) of the torchvision architecture `name` ("resnet50" or
    "imagenet_resnet50") with `stem`, with the weights of `path` (a .pth file or a weight name).

    num_classes None keeps the file's head size; another value than the file's replaces
    the head by a zero-initialised Linear (see the module docstring). `rng` draws the
    CIFAR stem's fresh layers (default: key 0)."""
    arch = architecture(name)
    target = model_name(arch, stem)
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
    classes = file_classes if num_classes is None else num_classes
    model = models.build(target, classes, 1.0, dtype)
    if stem == "cifar":
        variables, fresh, unused = matching_variables(arch, state_dict, model)
        _warn_fresh(target, arch, fresh, unused)
        return model, _with_fresh(model, variables, fresh, rng if rng is not None else jax.random.key(0))
    variables = state_dict_to_variables(arch, state_dict, file_classes)
    if classes != file_classes:
        variables["params"][HEAD_KEY] = _zero_head(variables["params"][HEAD_KEY]["kernel"].shape[0], classes)
    return model, variables


def initial_variables(config, rng: jax.Array | None = None) -> Optional[dict]:
    """{"params", "batch_stats"} from `config.pretrained` for `config.model` with
    `config.num_classes` classes, or None when `config.pretrained` is empty (a fresh init).

    The tree is the one `model.init` makes for the config (same paths, shapes, float32).
    `rng` draws the layers a CIFAR-stem model does not take from the file; the replaced head
    starts at zeros."""
    spec = config.pretrained
    if not spec:
        return None
    check_pretrained(spec, config.model, config.width)
    arch, stem = torchvision_of(config.model)
    _, variables = load_torchvision(arch, spec, config.num_classes, stem=stem, rng=rng)
    return variables


def _zero_head(features: int, num_classes: int) -> dict:
    return {"kernel": jnp.zeros((features, num_classes), jnp.float32), "bias": jnp.zeros((num_classes,), jnp.float32)}


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


def _template(model) -> dict:
    """The shapes of `model`'s variables (jax.eval_shape: nothing is computed)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))


def _given(state_dict: Mapping[str, Any]) -> dict:
    """The state_dict's tensors by key, without a wrapper's prefix (`module.`, ...)."""
    from cifar_jax.convert import strip_wrapper_prefix

    prefix = strip_wrapper_prefix([str(k) for k in state_dict])
    return {str(k)[len(prefix):]: v for k, v in state_dict.items()}


def _arrays(given: dict, entries) -> dict[str, np.ndarray]:
    """The tensors of the file that `entries` ask for, as numpy arrays."""
    from cifar_jax.convert import to_numpy

    return {key: to_numpy(key, given[key]) for key, *_ in entries if key in given}


def _variable(array: np.ndarray, layout: str) -> jax.Array:
    """A torch tensor's array as the float32 Flax variable of `layout` (conv kernels HWIO,
    Linear kernels (in, out))."""
    array = array.astype(np.float32)
    if layout == "oihw":
        array = array.transpose(2, 3, 1, 0)
    elif layout == "linear":
        array = array.T
    return jnp.asarray(np.ascontiguousarray(array))


def state_dict_to_variables(arch: str, state_dict: Mapping[str, Any], num_classes: int = 1000) -> dict:
    """Flax variables (float32) of `imagenet_<arch>` with `num_classes` classes from a
    torchvision state_dict; CifarJaxError naming the first missing or unexpected key, or
    the first shape mismatch with both shapes."""
    entries = sorted(_entries(arch, _template(models.build(PREFIX + arch, num_classes))), key=_torch_order)
    given = _given(state_dict)
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
    arrays = _arrays(given, entries)
    variables: dict = {"params": {}, "batch_stats": {}}
    for key, shape, collection, layer, leaf, layout in entries:
        if arrays[key].shape != tuple(shape):
            raise CifarJaxError(f"state_dict key {key!r} has shape {arrays[key].shape}, but {arch} with "
                                f"{num_classes} classes needs {tuple(shape)}; pass torchvision {arch} weights")
        variables[collection].setdefault(layer, {})[leaf] = _variable(arrays[key], layout)
    return variables


def matching_variables(arch: str, state_dict: Mapping[str, Any], model) -> tuple[dict, list[str], list[str]]:
    """(variables, fresh, unused): the variables of every layer of `model` (a CIFAR-stem
    model with torchvision `arch`'s names) whose tensors are all in the state_dict with the
    layer's shapes; the names of the other layers, in torchvision's order; and the modules
    of the file that `model` has no layer for."""
    entries = sorted(_entries(arch, _template(model)), key=_torch_order)
    given = _given(state_dict)
    arrays = _arrays(given, entries)
    fresh: list[str] = []
    for key, shape, _, layer, _, _ in entries:
        if (key not in arrays or arrays[key].shape != tuple(shape)) and layer not in fresh:
            fresh.append(layer)
    variables: dict = {"params": {}, "batch_stats": {}}
    for key, _, collection, layer, leaf, layout in entries:
        if layer not in fresh:
            variables[collection].setdefault(layer, {})[leaf] = _variable(arrays[key], layout)
    modules = {key.rsplit(".", 1)[0] for key, *_ in entries}
    unused = sorted({key.rsplit(".", 1)[0] for key in given} - modules,
                    key=lambda module: _torch_order((module + ".weight",)))
    return variables, fresh, unused


def _with_fresh(model, variables: dict, fresh: list[str], rng: jax.Array) -> dict:
    """`variables` completed with the `fresh` layers: drawn by the model's init from `rng`,
    the head at zeros (as the replaced head of the ImageNet stem)."""
    if not fresh:
        return variables

    def init(rng):
        drawn = model.init(rng, jnp.zeros((1, 32, 32, 3)), train=False)
        # Only the fresh layers leave the program: XLA drops the other layers' random draws.
        return {collection: {layer: tree[layer] for layer in fresh if layer in tree}
                for collection, tree in drawn.items()}

    for collection, layers in jax.jit(init)(rng).items():
        variables.setdefault(collection, {}).update(layers)
    if HEAD_KEY in fresh:
        variables["params"][HEAD_KEY] = jax.tree.map(jnp.zeros_like, variables["params"][HEAD_KEY])
    return variables


def _warn_fresh(model: str, arch: str, fresh: list[str], unused: list[str]) -> None:
    """One PretrainedWarning naming the layers that did not come from the weights."""
    if not fresh and not unused:
        return
    head = " (the head at zeros)" if HEAD_KEY in fresh else ""
    text = (f"{model} starts from torchvision {arch}'s weights but for {len(fresh)} layers, not in the file or "
            f"of another shape there, which start fresh: {', '.join(fresh)}{head}")
    if unused:
        text += f"; unused from the file: {', '.join(unused)}"
    warnings.warn(text, PretrainedWarning, stacklevel=3)
