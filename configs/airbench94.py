"""airbench94's network (cifar_jax/models/airbench.py): 2.0 M parameters, 7.9 MB at 10 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config default:airbench94`. Its own recipe, the record-class CIFAR-10 one, is the named
config fast (configs/fast.py).
"""
from cifar_jax.config import load_config_file


def get_config():
    return load_config_file("default:airbench94")
