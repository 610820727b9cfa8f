"""A tiny offline run on synthetic data: three epochs of 8 steps of an eighth-width ResNet9.

`cifar-jax train --config smoke --workdir runs/smoke` spends most of its time compiling the
steps (XLA:CPU); the test suite trains it once per run and shares the result (docs/testing.md).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("default")
    config.dataset = "synthetic"
    config.num_classes = 10
    # Neither a multiple of its batch size: every smoke run trains on a padded, masked last
    # batch and evaluates one too, as a real data set would (50,000 / 256 is not whole either).
    config.synthetic_train_size = 250
    config.synthetic_test_size = 125
    config.width = 0.125
    config.num_epochs = 3
    config.batch_size = 32
    config.eval_batch_size = 64
    # A short schedule needs a higher peak to learn anything in 24 steps.
    config.learning_rate = 1e-2
    return config
