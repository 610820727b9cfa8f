"""EfficientNet-B0 (torchvision's efficientnet_b0 with a stride-1 stem): 4.1 M parameters,
16.5 MB at 100 classes; dropout 0.2 and stochastic depth up to 0.2 are torchvision's
defaults, fixed in the model (cifar_jax/models/efficientnet.py).

Otherwise the seed recipe, untuned for this model (why: configs/default.py).
"""
import pathlib
import runpy

# Loaded by path so the file works wherever it is run from, like configs/smoke.py.
_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
    config = _default["get_config"]()
    config.model = "efficientnet_b0"
    return config
