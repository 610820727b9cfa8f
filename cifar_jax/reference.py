"""The seed's PyTorch ResNet9 and training loop, to check cifar_jax against (needs torch).

The model is the seed's code (a width multiplier added, as in cifar_jax.models.ResNet9);
the loop is the seed's `fit_one_cycle`: Adam(lr, weight_decay) with OneCycleLR stepped
every batch, `clip_grad_value_` before each step, cross-entropy, the last short batch
kept (DataLoader's default). The seed's torchvision transforms are written as tensor ops
(RandomCrop(32, padding=4, padding_mode="reflect"), RandomHorizontalFlip, ToTensor,
Normalize), so it reads the uint8 NHWC arrays of `cifar_jax.load_dataset` and both
implementations train on the same data. Importing this module imports torch;
`import cifar_jax` does not import this module.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np

from cifar_jax.convert import import_torch
from cifar_jax.models import seed_channels

torch = import_torch()
nn = torch.nn
F = torch.nn.functional

PAD = 4


def conv_block(in_channels: int, out_channels: int, pool: bool = False) -> "nn.Sequential":
    """The seed's conv_block: Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU [-> MaxPool2d(2)]."""
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ResNet9(nn.Module):
    """The seed's ResNet9 (NCHW); width 1.0 gives its 32/64/128/256/512 channels."""

    def __init__(self, in_channels: int = 3, num_classes: int = 100, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4, c5 = seed_channels(width)
        self.conv1 = conv_block(in_channels, c1)
        self.conv2 = conv_block(c1, c2, pool=True)
        self.res1 = nn.Sequential(conv_block(c2, c2), conv_block(c2, c2))
        self.conv3 = conv_block(c2, c3, pool=True)
        self.conv4 = conv_block(c3, c4, pool=True)
        self.res2 = nn.Sequential(conv_block(c4, c4), conv_block(c4, c4))
        self.conv5 = conv_block(c4, c5, pool=True)
        self.res3 = nn.Sequential(conv_block(c5, c5), conv_block(c5, c5))
        self.classifier = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c5, num_classes))

    def forward(self, xb):
        out = self.conv1(xb)
        out = self.conv2(out)
        out = self.res1(out) + out
        out = self.conv3(out)
        out = self.conv4(out)
        out = self.res2(out) + out
        out = self.conv5(out)
        out = self.res3(out) + out
        return self.classifier(out)


def build_model(config) -> ResNet9:
    """The config's ResNet9 (num_classes, width) with PyTorch's default initialisation."""
    return ResNet9(3, config.num_classes, config.width)


def make_optimizer(model: "nn.Module", config, steps_per_epoch: int):
    """(optimizer, scheduler) as the seed builds them: Adam(max_lr, weight_decay) and
    OneCycleLR(max_lr, epochs, steps_per_epoch), which resets the lr to max_lr/div_factor
    and Adam's beta1 to max_momentum. The config's values are torch's defaults for the
    seed recipe; weight_decay_mode="adamw" uses torch.optim.AdamW instead."""
    adam = torch.optim.AdamW if config.weight_decay_mode == "adamw" else torch.optim.Adam
    optimizer = adam(
        model.parameters(),
        lr=config.learning_rate,
        betas=(config.beta1_max, config.beta2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.learning_rate,
        epochs=config.num_epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=config.pct_start,
        div_factor=config.div_factor,
        final_div_factor=config.final_div_factor,
        base_momentum=config.beta1_min,
        max_momentum=config.beta1_max,
    )
    return optimizer, scheduler


def random_crop_flip(x, generator: Optional["torch.Generator"] = None, pad: int = PAD):
    """RandomCrop(size, padding=pad, padding_mode="reflect") + RandomHorizontalFlip(0.5) on a
    float NCHW batch, each image with its own offset (uniform over (2*pad+1)^2) and flip.
    The random numbers are drawn on `generator`'s device (x's device without one)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    where = generator.device if generator is not None else x.device
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=where).to(x.device)
    flips = (torch.rand(n, generator=generator, device=where) < 0.5).to(x.device)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    cropped = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    cropped = cropped.permute(0, 3, 1, 2)
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped).contiguous()


def preprocess(images, mean: Sequence[float], std: Sequence[float], augment: bool = False,
               generator: Optional["torch.Generator"] = None):
    """uint8 NHWC images (a tensor) -> normalised float32 NCHW, as the seed's transforms:
    [crop + flip], ToTensor (/255), Normalize(mean, std). Crop and flip move pixels only,
    so applying them after the /255 gives the same values as torchvision's order."""
    x = images.permute(0, 3, 1, 2).float().div(255)
    if augment:
        x = random_crop_flip(x, generator)
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub(mean).div(std)


def train_step(model, optimizer, scheduler, images, labels, config, augment: Optional[bool] = None,
               generator: Optional["torch.Generator"] = None):
    """One step of the seed's loop on a uint8 NHWC batch; returns the loss (a tensor).
    `augment` None follows config.augment."""
    model.train()
    augment = config.augment if augment is None else augment
    inputs = preprocess(images, config.mean, config.std, augment, generator)
    inputs = inputs.to(next(model.parameters()).dtype)  # a float64 model gets float64 inputs
    loss = F.cross_entropy(model(inputs), labels)
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()
    return loss.detach()


def train_epoch(model, optimizer, scheduler, images, labels, config, order: np.ndarray,
                generator: Optional["torch.Generator"] = None) -> dict:
    """One epoch over `images[order]` (tensors on the model's device) in batches of
    config.batch_size, the last short batch kept. Returns the seed's log values:
    "train_loss" (the mean of the batch losses) and "lr" (that of the epoch's last step)."""
    losses = []
    order = torch.as_tensor(np.asarray(order), device=images.device)
    for start in range(0, len(order), config.batch_size):
        idx = order[start : start + config.batch_size]
        lr = optimizer.param_groups[0]["lr"]
        losses.append(train_step(model, optimizer, scheduler, images[idx], labels[idx], config, generator=generator))
    return {"train_loss": float(torch.stack(losses).mean()), "lr": lr}


@torch.no_grad()
def evaluate(model, images, labels, config, batch_size: Optional[int] = None) -> dict:
    """Loss and accuracy over the whole set (exact counts, not the seed's mean of batch means)."""
    model.eval()
    batch_size = batch_size or config.eval_batch_size
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = preprocess(images[start : start + batch_size], config.mean, config.std)
        x = x.to(next(model.parameters()).dtype)
        y = labels[start : start + batch_size]
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"loss": loss_sum / len(labels), "accuracy": correct / len(labels)}


def fit(config, data, device: str = "cpu", seed: int = 0, model: Optional["nn.Module"] = None,
        orders: Optional[Callable[[int], np.ndarray]] = None,
        on_epoch: Optional[Callable[[int, dict], None]] = None):
    """The seed's fit_one_cycle on `data` (a cifar_jax Dataset); returns (model, history).

    `orders(epoch)` gives each epoch's example order (default: a seeded shuffle), so a JAX
    run can see the batches in the same order. `on_epoch(epoch, record)` is called after
    each epoch with {"epoch", "lr", "train_loss", "test_loss", "test_acc", "seconds"}
    (seconds: the training time of the epoch, evaluation excluded).
    """
    import time

    torch.manual_seed(seed)
    model = (model if model is not None else build_model(config)).to(device)
    train_images = torch.as_tensor(data.train_images, device=device)
    train_labels = torch.as_tensor(data.train_labels, device=device).long()
    test_images = torch.as_tensor(data.test_images, device=device)
    test_labels = torch.as_tensor(data.test_labels, device=device).long()
    n = len(data.train_labels)
    steps_per_epoch = math.ceil(n / config.batch_size)
    optimizer, scheduler = make_optimizer(model, config, steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(seed)
    if orders is None:
        orders = lambda epoch: np.random.default_rng([seed, epoch]).permutation(n)  # noqa: E731
    history = []
    for epoch in range(config.num_epochs):
        _synchronize(device)
        start = time.perf_counter()
        train = train_epoch(model, optimizer, scheduler, train_images, train_labels, config, orders(epoch), generator)
        _synchronize(device)
        seconds = time.perf_counter() - start
        test = evaluate(model, test_images, test_labels, config)
        record = {"epoch": epoch, "lr": train["lr"], "train_loss": train["train_loss"],
                  "test_loss": test["loss"], "test_acc": test["accuracy"], "seconds": seconds}
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    return model, history


def _synchronize(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def count_parameters(model: "nn.Module") -> int:
    return sum(p.numel() for p in model.parameters())
