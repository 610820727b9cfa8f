"""torchvision's model code on CPU torch, for tests only (cifar_jax never needs torchvision).

The torchvision 0.28.0 wheel on the package index is built against CUDA torch, so its C++
ops (`torchvision._C`) do not load beside torch 2.13.0+cpu, and importing
torchvision.models then fails where torchvision registers fake kernels for
`torchvision::nms` and `torchvision::qnms`. Defining those two operator schemas first
(the signatures of torchvision/_meta_registrations.py) lets it import; the models
themselves are pure Python. `import_torchvision()` returns the module, or skips the test
when torchvision is not installed.
"""
from __future__ import annotations

import pytest

_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def import_torchvision():
    torch = pytest.importorskip("torch")
    import importlib.util
    import sys

    if "torchvision" not in sys.modules:
        if importlib.util.find_spec("torchvision") is None:
            pytest.skip("torchvision is not installed (pip install -e '.[torch]')")
        for name, schema in _SCHEMAS.items():
            try:
                torch.library.define(name, schema)
            except RuntimeError:  # already defined (e.g. by a working torchvision._C)
                pass
    import torchvision

    return torchvision
