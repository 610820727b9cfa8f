"""The record-class CIFAR-10 recipe: airbench94 (arXiv 2404.00498), 94 % in seconds on one GPU.

Keller Jordan's airbench94 (cifar10-airbench, legacy/airbench94.py), written with this
project's pieces (docs/fast.md): its network (`model=airbench94`: a frozen 2x2 patch-whitening
conv, three conv groups of widths 64/256/256, GELU, BatchNorm with momentum 0.4 and eps 1e-12),
the whitening filters computed from 5,000 training images before the first step, dirac init
of the other convs, Nesterov SGD with airbench's batch-size-aware learning rate and weight
decay, the norm biases at 64x the lr, label smoothing 0.2, airbench's triangle schedule,
lookahead every 5 steps, random translation by 2 px and alternating flips, and test-time
augmentation level 2 in evaluation; bfloat16 compute, float32 parameters.

Differences from airbench94: 10 epochs (airbench trains 9.9; epochs are whole here), the last
short batch of an epoch is kept and masked (airbench drops it: 48 steps an epoch, here 49),
the loss is the batch's mean (airbench's is its sum: the learning rate below is scaled to
match), and lookahead averages the parameters but not BatchNorm's running statistics.
"""
from cifar_jax.config import load_config_file

# airbench94's hyperparameters, in its units ("per 1024 examples", for a summed loss).
AIRBENCH = {
    "batch_size": 1024,
    "lr": 11.5,  # learning rate per 1024 examples
    "momentum": 0.85,
    "weight_decay": 0.0153,  # weight decay per 1024 examples
    "bias_scaler": 64.0,  # the norm biases' learning rate times this (their decay the same)
}


def sgd_hyperparameters(batch_size: int = AIRBENCH["batch_size"], lr: float = AIRBENCH["lr"],
                        momentum: float = AIRBENCH["momentum"], weight_decay: float = AIRBENCH["weight_decay"]):
    """(learning_rate, weight_decay) of this project's SGD (the mean loss's gradient, torch SGD's
    coupled weight decay) that take airbench's steps.

    airbench divides its lr by kilostep_scale = 1024 (1 + 1 / (1 - momentum)), so that the
    Nesterov steps have the gradients' scale whatever the momentum, and gives torch's SGD
    weight_decay = wd / lr with wd = weight_decay * batch / kilostep_scale, so that the decay per
    step, lr * weight_decay, does not change with the lr. Its loss is the batch's sum, B times
    the mean: the same steps on the mean loss take lr * B and weight decay (wd / lr) / B.
    """
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    torch_lr = lr / kilostep_scale
    torch_weight_decay = weight_decay * batch_size / kilostep_scale / torch_lr
    return torch_lr * batch_size, torch_weight_decay / batch_size


def get_config(batch_size: str = ""):
    """The recipe; `--config fast:BATCH` trains with batch BATCH, airbench's learning rate and
    weight decay rescaled for it (sgd_hyperparameters); `--config.batch_size` alone keeps them."""
    batch = int(batch_size) if batch_size else AIRBENCH["batch_size"]
    config = load_config_file("default")
    config.dataset = "cifar10"
    config.num_classes = 10
    config.mean = (0.4914, 0.4822, 0.4465)  # airbench's CIFAR-10 statistics
    config.std = (0.2470, 0.2435, 0.2616)
    config.model = "airbench94"
    config.dtype = "bfloat16"

    config.num_epochs = 10
    config.batch_size = batch
    config.eval_batch_size = 2000
    config.progress_updates = 1  # the whole epoch in one compiled call
    config.checkpoint_every_epochs = 10  # and the last: a record-class run saves once

    config.crop_padding = 2
    config.alternating_flip = True
    config.tta_level = 2

    config.optimizer = "sgd"
    config.nesterov = True
    config.momentum = AIRBENCH["momentum"]
    config.learning_rate, config.weight_decay = sgd_hyperparameters(batch)  # batch 1024: 1.5, 0.00133
    config.weight_decay_mode = "l2"
    config.grad_clip = 0.0
    config.schedule = "triangle"
    config.pct_start = 0.23
    config.warmup_start_factor = 0.2
    config.final_lr_factor = 0.07
    config.bn_bias_lr_mult = AIRBENCH["bias_scaler"]
    config.frozen_params = "whiten/kernel,*/BatchNorm_*/scale"
    config.whiten_bias_epochs = 3
    config.lookahead_every = 5
    config.lookahead_decay = 0.95
    config.label_smoothing = 0.2
    return config
