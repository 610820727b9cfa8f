"""A tiny offline run on synthetic data: three short epochs of a quarter-width ResNet9.

`cifar-jax train --config smoke --workdir runs/smoke` took 22 s with a warm compilation
cache and 32-47 s cold (mostly XLA compiling the steps) on the project's 2-core AMD EPYC
CPU shared with other work (jax 0.10.2, 2026-12-04).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("default")
    config.dataset = "synthetic"
    config.num_classes = 10
    config.synthetic_train_size = 512
    config.synthetic_test_size = 256
    config.width = 0.25
    config.num_epochs = 3
    config.batch_size = 64
    config.eval_batch_size = 128
    # A short schedule needs a higher peak to learn anything in 24 steps.
    config.learning_rate = 1e-2
    return config
