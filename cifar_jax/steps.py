"""Train state, and the pure, jit-compiled train and eval steps.

A batch is a dict: "image" uint8 (B, H, W, 3), "label" int (B,), and optionally "mask"
bool (B,) marking real examples. Padding a short batch up to the usual size and masking
the padding keeps one compiled shape while loss, accuracy, gradients and BatchNorm
statistics stay exactly those of the short batch.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from cifar_jax import models
from cifar_jax.augment import augment, normalize
from cifar_jax.optim import make_optimizer


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the steps apply to every batch, fixed for a run (static under jit: a change
    compiles the steps again).

    Attributes:
      mean, std: per-channel (R, G, B) normalisation of [0, 1] pixels.
      augment: random crop (reflect pad 4) and horizontal flip in training.
      skip_nonfinite: True: a step whose loss or gradients are NaN/inf leaves params,
        batch_stats and opt_state as they were (only `step` advances); False: it is
        applied, and the loop stops on the step's `finite` metric.
    """

    mean: tuple = (0.5071, 0.4867, 0.4408)
    std: tuple = (0.2675, 0.2565, 0.2761)
    augment: bool = True
    skip_nonfinite: bool = False

    @classmethod
    def from_config(cls, config) -> "StepConfig":
        """The step settings of a run config (`mean`, `std`, `augment`, `skip_nonfinite_steps`)."""
        return cls(mean=tuple(float(m) for m in config.mean), std=tuple(float(s) for s in config.std),
                   augment=bool(config.augment), skip_nonfinite=bool(config.skip_nonfinite_steps))


class TrainState(train_state.TrainState):
    """params, batch_stats, opt_state and step (the arrays), plus `step_config`: the
    static settings the steps apply to each batch."""

    batch_stats: Any = None
    step_config: StepConfig = flax.struct.field(pytree_node=False, default=StepConfig())

    @property
    def learning_rate(self) -> jax.Array:
        """The learning rate of the last update (the first one's before any update)."""
        return self.opt_state.hyperparams["learning_rate"]


def create_model(config) -> nn.Module:
    """The config's model.

    Args:
      config: a run config (`model`, a name in cifar_jax.models.MODELS; `num_classes`,
        `width`, `dtype`).

    Returns:
      The Flax module, called as `model.apply(variables, images, train=..., mask=...)`.
    """
    return models.build(config.model, config.num_classes, config.width, config.dtype)


def create_train_state(
    rng: jax.Array, config, steps_per_epoch: int, image_shape=(32, 32, 3)
) -> TrainState:
    """A fresh train state: the model, its PyTorch-style init, and the config's optimizer.

    Args:
      rng: the key of the parameter init.
      config: a run config (configs/default.py's keys).
      steps_per_epoch: optimizer steps per epoch; with `config.num_epochs` it sets the
        length of the one-cycle schedule.
      image_shape: (H, W, C) of one input image.

    Returns:
      A TrainState at step 0 (an int32 array) with `step_config` taken from `config`.
    """
    model = create_model(config)
    tx = make_optimizer(config, steps_per_epoch, head_key=models.HEAD_KEY)

    # One compiled program instead of hundreds of eagerly dispatched ops (one per
    # initializer and optimizer buffer); the persistent compilation cache keeps it.
    @jax.jit
    def init(rng):
        variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        return variables["params"], variables["batch_stats"], tx.init(variables["params"])

    params, batch_stats, opt_state = init(rng)
    return TrainState(
        # An int32 array, not Python's 0: the step's output has that type, and a mismatch
        # would compile the train step a second time.
        step=jnp.zeros((), jnp.int32),
        apply_fn=model.apply,
        params=params,
        batch_stats=batch_stats,
        tx=tx,
        opt_state=opt_state,
        step_config=StepConfig.from_config(config),
    )


def _weights(batch) -> jax.Array:
    mask = batch.get("mask")
    if mask is None:
        return jnp.ones(batch["label"].shape, jnp.float32)
    return mask.astype(jnp.float32)


def _metrics(logits, labels, weight) -> dict:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    count = jnp.sum(weight)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {
        "loss": jnp.sum(losses * weight) / count,
        "accuracy": jnp.sum(correct * weight) / count,
        "count": count,
    }


@jax.jit
def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`, with augmentation if `state.step_config.augment`.

    Args:
      state: the train state before the step.
      batch: {"image": uint8 (B, H, W, 3), "label": int (B,), optionally "mask": bool (B,)};
        masked-out examples count for nothing (loss, gradients, BatchNorm statistics).
      rng: the run's key. The step folds in `state.step`, so pass the same key every step.

    Returns:
      (new state, metrics): metrics are scalars: `loss` and `accuracy` over the real
      examples, their `count`, the `learning_rate` the step used, and `finite` (False when
      the loss or a gradient was NaN/inf; with `step_config.skip_nonfinite` such a step
      changes nothing but `step`).
    """
    settings = state.step_config
    weight = _weights(batch)
    mask = batch.get("mask")
    step_rng = jax.random.fold_in(rng, state.step)
    images = augment(step_rng, batch["image"]) if settings.augment else batch["image"]
    images = normalize(images, settings.mean, settings.std)

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mask=mask,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(step_rng, 1)},  # dropout / stochastic depth
        )
        metrics = _metrics(logits, batch["label"], weight)
        return metrics["loss"], (metrics, updates["batch_stats"])

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    finite = jnp.isfinite(metrics["loss"]) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if settings.skip_nonfinite:
        new_state = new_state.replace(**{
            name: jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                               getattr(new_state, name), getattr(state, name))
            for name in ("params", "batch_stats", "opt_state")})
    metrics["learning_rate"] = new_state.learning_rate
    metrics["finite"] = finite
    return new_state, metrics


@jax.jit
def eval_step(state: TrainState, batch: dict) -> dict:
    """The model in inference mode (running BatchNorm statistics, no augmentation) on `batch`.

    Args:
      state: a train state (only params, batch_stats and step_config are read).
      batch: as for `train_step`; masked-out examples count for nothing.

    Returns:
      Scalars `loss` and `accuracy` over the real examples, and their `count`.
    """
    settings = state.step_config
    images = normalize(batch["image"], settings.mean, settings.std)
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, images, train=False
    )
    return _metrics(logits, batch["label"], _weights(batch))
