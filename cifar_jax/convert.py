"""PyTorch weights of the seed's ResNet9 <-> Flax variables of `cifar_jax.models.ResNet9`.

A PyTorch `state_dict` of the seed's model (`cifar_jax.reference.ResNet9`, or the seed's own
class: the keys are the same) becomes `{"params": ..., "batch_stats": ...}` for
`ResNet9.apply`, and back:

| PyTorch key                          | Flax path                                             |
|--------------------------------------|-------------------------------------------------------|
| `conv1.0.weight` (O, I, 3, 3)        | `params/conv1/Conv_0/kernel` (3, 3, I, O)             |
| `conv1.0.bias`                       | `params/conv1/Conv_0/bias`                            |
| `conv1.1.weight`, `.bias`            | `params/conv1/BatchNorm_0/scale`, `bias`              |
| `conv1.1.running_mean`, `_var`       | `batch_stats/conv1/BatchNorm_0/mean`, `var`           |
| `conv1.1.num_batches_tracked`        | (dropped; restored from an argument on the way out)   |
| `res1.0.0.weight` ...                | `params/res1/ConvBlock_0/Conv_0/kernel` ...           |
| `classifier.2.weight` (out, in)      | `params/classifier/kernel` (in, out)                  |

Nothing here imports torch until a torch tensor or file is involved: `state_dict_to_variables`
also takes numpy arrays, and importing this module is free.
"""
from __future__ import annotations

import collections
import os
import pickle
import re
from typing import Any, Mapping, Optional

import numpy as np

from cifar_jax.errors import CifarJaxError
from cifar_jax.models import SEED_WIDTHS, seed_channels

# (PyTorch prefix, Flax path) of every conv block, in the model's order.
BLOCKS = (
    ("conv1", ("conv1",)),
    ("conv2", ("conv2",)),
    ("res1.0", ("res1", "ConvBlock_0")),
    ("res1.1", ("res1", "ConvBlock_1")),
    ("conv3", ("conv3",)),
    ("conv4", ("conv4",)),
    ("res2.0", ("res2", "ConvBlock_0")),
    ("res2.1", ("res2", "ConvBlock_1")),
    ("conv5", ("conv5",)),
    ("res3.0", ("res3", "ConvBlock_0")),
    ("res3.1", ("res3", "ConvBlock_1")),
)
# Which of SEED_WIDTHS each block outputs, and which it reads (-1: the 3 image channels).
_BLOCK_OUT = (0, 1, 1, 1, 2, 3, 3, 3, 4, 4, 4)
_BLOCK_IN = (-1, 0, 1, 1, 1, 2, 3, 3, 3, 4, 4)
CLASSIFIER = "classifier.2"
# Prefixes that wrappers add to every key: nn.DataParallel / DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_TORCH_MISSING = "PyTorch is needed to read or write .pth files; install it with: pip install 'cifar-jax[torch]'"


def import_torch():
    """`torch`, or a CifarJaxError that says how to install it."""
    try:
        import torch
    except ImportError:
        raise CifarJaxError(_TORCH_MISSING) from None
    return torch


def _entries(num_classes: int, width: float):
    """(torch key, torch shape, collection, flax path, layout) for every tensor of the model."""
    channels = seed_channels(width)
    for (prefix, path), out_i, in_i in zip(BLOCKS, _BLOCK_OUT, _BLOCK_IN):
        cout = channels[out_i]
        cin = 3 if in_i < 0 else channels[in_i]
        conv, bn = path + ("Conv_0",), path + ("BatchNorm_0",)
        yield f"{prefix}.0.weight", (cout, cin, 3, 3), "params", conv + ("kernel",), "oihw"
        yield f"{prefix}.0.bias", (cout,), "params", conv + ("bias",), "vector"
        yield f"{prefix}.1.weight", (cout,), "params", bn + ("scale",), "vector"
        yield f"{prefix}.1.bias", (cout,), "params", bn + ("bias",), "vector"
        yield f"{prefix}.1.running_mean", (cout,), "batch_stats", bn + ("mean",), "vector"
        yield f"{prefix}.1.running_var", (cout,), "batch_stats", bn + ("var",), "vector"
        yield f"{prefix}.1.num_batches_tracked", (), None, None, "count"
    yield f"{CLASSIFIER}.weight", (num_classes, channels[4]), "params", ("classifier", "kernel"), "linear"
    yield f"{CLASSIFIER}.bias", (num_classes,), "params", ("classifier", "bias"), "vector"


def expected_shapes(num_classes: int = 100, width: float = 1.0) -> dict[str, tuple[int, ...]]:
    """Every key of the PyTorch state_dict of the seed's ResNet9, with its shape, in order."""
    return {key: shape for key, shape, *_ in _entries(num_classes, width)}


def strip_wrapper_prefix(keys: list[str]) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def to_numpy(key: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (torch is imported if one exists)
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    elif not isinstance(value, np.ndarray):
        raise CifarJaxError(f"state_dict key {key!r} holds a {type(value).__name__}, not a tensor; "
                            "pass the model's state_dict() (names -> tensors)")
    return value


def state_dict_to_variables(
    state_dict: Mapping[str, Any], num_classes: Optional[int] = None, width: Optional[float] = None
) -> dict:
    """Flax variables {"params", "batch_stats"} (float32 jax arrays) from a PyTorch state_dict.

    `num_classes` and `width` are those of the Flax ResNet9 the variables are for; left as
    None they are read off the state_dict (classifier rows, conv5 channels / 512). Every key
    and shape is checked; a mismatch raises CifarJaxError naming the key and both shapes.
    Floating tensors of any precision become float32; `num_batches_tracked` is dropped.
    """
    import jax.numpy as jnp  # here, not at the top: cifar_jax is already importing jax anyway

    if not isinstance(state_dict, Mapping):
        raise CifarJaxError(f"expected a state_dict (a dict of names -> tensors), got a {type(state_dict).__name__}")
    keys = [str(k) for k in state_dict]
    prefix = strip_wrapper_prefix(keys)
    given = {str(k)[len(prefix):]: v for k, v in state_dict.items()}

    def shape_of(key):
        value = given.get(key)
        return tuple(getattr(value, "shape", ())) if value is not None else None

    if num_classes is None:
        shape = shape_of(f"{CLASSIFIER}.weight")
        num_classes = shape[0] if shape and len(shape) == 2 else 100
    if width is None:
        width = _width_of(shape_of("conv5.0.weight")) or 1.0

    entries = list(_entries(num_classes, width))
    expected = {key for key, *_ in entries}
    missing = [key for key, *_, layout in entries if key not in given and layout != "count"]
    unexpected = [key for key in given if key not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise CifarJaxError(f"the state_dict is not the seed's ResNet9: {'; '.join(parts)}; "
                            "save model.state_dict() of the seed's ResNet9 (cifar_jax.reference.ResNet9)")

    variables: dict = {"params": {}, "batch_stats": {}}
    for key, torch_shape, collection, path, layout in entries:
        if layout == "count":
            continue
        array = to_numpy(key, given[key])
        if array.shape != torch_shape:
            saved = _width_of(shape_of("conv5.0.weight"))
            hint = f" (the saved model looks like width={saved:g})" if saved and saved != width else ""
            raise CifarJaxError(
                f"state_dict key {key!r} has shape {tuple(array.shape)} but ResNet9(num_classes={num_classes}, "
                f"width={width:g}) expects {torch_shape}{hint}; use the saved model's num_classes and width (--config.num_classes, --config.width)"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise CifarJaxError(f"state_dict key {key!r} holds {array.dtype} values, expected floating point weights")
        array = array.astype(np.float32)
        if layout == "oihw":
            array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif layout == "linear":
            array = array.T  # (out, in) -> (in, out)
        node = variables[collection]
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jnp.asarray(np.ascontiguousarray(array))
    return variables


def variables_to_state_dict(variables: Mapping[str, Any], num_batches_tracked: int = 0) -> "collections.OrderedDict":
    """The PyTorch state_dict (float32 CPU tensors, in the module's key order) of Flax variables.

    Every BatchNorm's `num_batches_tracked`, which Flax does not keep, is set to
    `num_batches_tracked` (the number of training steps taken, e.g. `int(state.step)`);
    PyTorch uses it only when BatchNorm2d(momentum=None).
    """
    torch = import_torch()
    params, batch_stats = variables.get("params"), variables.get("batch_stats")
    if params is None or batch_stats is None:
        raise CifarJaxError("expected Flax variables with 'params' and 'batch_stats' (e.g. {'params': state.params, "
                            "'batch_stats': state.batch_stats})")
    trees = {"params": params, "batch_stats": batch_stats}
    kernel = _lookup(trees, "params", ("classifier", "kernel"))
    conv5 = _lookup(trees, "params", ("conv5", "Conv_0", "kernel"))  # HWIO
    num_classes, width = int(np.shape(kernel)[1]), _width_of(np.shape(conv5)[::-1])

    state_dict = collections.OrderedDict()
    for key, torch_shape, collection, path, layout in _entries(num_classes, width):
        if layout == "count":
            state_dict[key] = torch.tensor(int(num_batches_tracked), dtype=torch.long)
            continue
        array = np.asarray(_lookup(trees, collection, path), dtype=np.float32)
        if layout == "oihw":
            array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif layout == "linear":
            array = array.T
        if array.shape != torch_shape:
            raise CifarJaxError(f"Flax variable {collection}/{'/'.join(path)} gives {key!r} the shape {array.shape}, "
                                f"but ResNet9(num_classes={num_classes}, width={width:g}) needs {torch_shape}")
        state_dict[key] = torch.from_numpy(np.array(array, order="C", copy=True))  # writable, owned
    return state_dict


def _width_of(conv5_shape) -> Optional[float]:
    """The width whose conv5 has this many output channels (the widest layer: the most precise)."""
    if not conv5_shape or len(conv5_shape) != 4:
        return None
    return conv5_shape[0] / SEED_WIDTHS[4]


def _lookup(trees, collection, path):
    node = trees[collection]
    for i, name in enumerate(path):
        try:
            node = node[name]
        except (KeyError, TypeError):
            where = "/".join((collection,) + path[: i + 1])
            raise CifarJaxError(f"the Flax variables have no {where}; they are not cifar_jax's ResNet9") from None
    return node


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def read_state_dict(path: str | os.PathLike) -> dict:
    """The state_dict in a file written by torch.save(model.state_dict(), path), read safely.

    `torch.load(weights_only=True)` executes no code from the file; a whole pickled model
    (`torch.save(model)`, as the seed saved it) cannot be read that way and is refused
    with a CifarJaxError saying how to re-save it.
    """
    torch = import_torch()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CifarJaxError(f"no file {path}; pass a file written by torch.save(model.state_dict(), PATH)")
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        message = str(error)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if found:  # a pickled object of some class: as the seed saved it, the whole model
            raise CifarJaxError(
                f"{path} holds a pickled {found.group(1)} (as torch.save(model) saves a whole model), which cannot "
                "be loaded safely; in PyTorch, load it and save the weights instead: "
                "torch.save(model.state_dict(), 'weights.pth')"
            ) from None
        # Not torch's own advice (it suggests weights_only=False, i.e. running the file's code).
        detail = re.search(r"WeightsUnpickler error: ([^\n]+)", message)
        raise CifarJaxError(f"{path} is not a readable PyTorch weights file (UnpicklingError"
                            f"{': ' + detail.group(1)[:200] if detail else ''}); "
                            "save one with torch.save(model.state_dict(), PATH)") from None
    except Exception as error:  # a malformed file fails anywhere in the unpickler (KeyError, EOFError, ...)
        raise CifarJaxError(f"{path} is not a readable PyTorch weights file ({type(error).__name__}: "
                            f"{_first_line(str(error))}); save one with torch.save(model.state_dict(), PATH)") from None
    if not isinstance(loaded, Mapping):
        raise CifarJaxError(f"{path} holds a {type(loaded).__name__}, not a state_dict; "
                            "save one with torch.save(model.state_dict(), PATH)")
    not_tensors = [str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CifarJaxError(f"{path} holds a dict with non-tensor entries {_few(not_tensors)}, not a state_dict; if it is a "
                            "training checkpoint, save just the model's weights: torch.save(model.state_dict(), PATH)")
    return dict(loaded)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "no details"


def load_torch_weights(
    path: str | os.PathLike, num_classes: Optional[int] = None, width: Optional[float] = None
) -> dict:
    """Flax variables {"params", "batch_stats"} of the PyTorch state_dict file at `path`.

    See `read_state_dict` (what files are accepted) and `state_dict_to_variables`
    (`num_classes`/`width`: those of the Flax model; None reads them off the file).
    """
    return state_dict_to_variables(read_state_dict(path), num_classes=num_classes, width=width)


def save_torch_weights(variables: Mapping[str, Any], path: str | os.PathLike, num_batches_tracked: int = 0) -> None:
    """Writes Flax variables as a PyTorch state_dict file that the seed's ResNet9 loads."""
    torch = import_torch()
    torch.save(variables_to_state_dict(variables, num_batches_tracked), os.fspath(path))
