"""A tiny offline run on synthetic data: 3 epochs of 8 steps, most of its time compiling."""
import pathlib

from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file(str(pathlib.Path(__file__).with_name("default.py")))
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
