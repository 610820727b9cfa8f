"""EfficientNet-B0 (torchvision's efficientnet_b0 with a stride-1 stem): 4.1 M parameters,
16.5 MB at 100 classes; dropout 0.2 and stochastic depth up to 0.2 are torchvision's
defaults, fixed in the model (cifar_jax/models/efficientnet.py).

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config default:efficientnet_b0`.
"""
from cifar_jax.config import load_config_file


def get_config():
    return load_config_file("default:efficientnet_b0")
