"""Train state, and the pure, jit-compiled train and eval steps.

A batch is a dict: "image" uint8 (B, H, W, 3), "label" int (B,), and optionally "mask"
bool (B,) marking real examples. Padding a short batch up to the usual size and masking
the padding keeps one compiled shape while loss, accuracy, gradients and BatchNorm
statistics stay exactly those of the short batch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from cifar_jax import models
from cifar_jax.augment import alternating_flips, augment, model_input, normalize, resize, tta_logits
from cifar_jax.compiled import backend_options, tuned_jit
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
      image_size: the model's input is image_size x image_size: the batch is cropped and
        flipped at its stored size (32), normalised, then resized (bilinear) to this on the
        device, in training and evaluation alike; the stored size means no resize.
      freeze_backbone: the model runs in inference mode in training too (BatchNorm on its
        running statistics, which stay as they are; no dropout), and gradients flow into the
        head (`models.HEAD_KEY`) only: feature extraction. The optimizer
        (`freeze_backbone` in cifar_jax.optim) gives the backbone no update.
      grad_accum_steps: k: each step runs the batch as k microbatches of batch/k, one
        forward and backward pass each (BatchNorm statistics per microbatch, updated in
        turn), and applies one update with the full batch's gradient.
      label_smoothing: a: the training loss is the cross-entropy against (1 - a) one-hot +
        a / classes (torch's CrossEntropyLoss(label_smoothing=a), optax.smooth_labels);
        evaluation's loss stays the plain one.
      crop_padding: the random crop's reflect padding: a random translation by up to this
        many pixels (0: none; the flip stays).
      alternating_flip: airbench's flip instead of a random one (augment.alternating_flips):
        needs the batch's "index" (dataset indices, as the training loop's batches carry) and
        `steps_per_epoch` (the epoch is state.step // steps_per_epoch).
      steps_per_epoch: optimizer steps per epoch; set (by create_train_state) only for
        alternating_flip, else 0.
      tta_level: evaluation's test-time augmentation (augment.tta_logits): 0 none, 1 mirror,
        2 mirror and translated views.
    """

    mean: tuple = (0.5071, 0.4867, 0.4408)
    std: tuple = (0.2675, 0.2565, 0.2761)
    augment: bool = True
    skip_nonfinite: bool = False
    image_size: int = 32
    freeze_backbone: bool = False
    grad_accum_steps: int = 1
    label_smoothing: float = 0.0
    crop_padding: int = 4
    alternating_flip: bool = False
    steps_per_epoch: int = 0
    tta_level: int = 0

    @classmethod
    def from_config(cls, config, steps_per_epoch: int = 0) -> "StepConfig":
        """The step settings of a run config (`mean`, `std`, `augment`, `skip_nonfinite_steps`,
        `image_size`, `freeze_backbone`, `grad_accum_steps`, `label_smoothing`, `crop_padding`,
        `alternating_flip`, `tta_level`); `steps_per_epoch` is kept for alternating_flip only."""
        return cls(mean=tuple(float(m) for m in config.mean), std=tuple(float(s) for s in config.std),
                   augment=bool(config.augment), skip_nonfinite=bool(config.skip_nonfinite_steps),
                   image_size=config.image_size,
                   freeze_backbone=config.freeze_backbone,
                   grad_accum_steps=config.grad_accum_steps,
                   label_smoothing=float(config.label_smoothing),
                   crop_padding=config.crop_padding,
                   alternating_flip=bool(config.alternating_flip),
                   steps_per_epoch=steps_per_epoch if config.alternating_flip else 0,
                   tta_level=config.tta_level)


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
    return _model(config.model, config.num_classes, config.width, config.dtype)


@functools.lru_cache(maxsize=16)
def _model(name: str, num_classes: int, width: float, dtype: str) -> nn.Module:
    # One module object per setting: TrainState.apply_fn is its bound `apply`, and bound
    # methods compare equal only on the same object (see _optimizer for why that matters).
    return models.build(name, num_classes, width, dtype)


# XLA:CPU's default optimisation level spends most of the init's compile time on hundreds
# of random-number fusions in a program that runs once; level 1 halves it, and the steps'
# CPU options (cifar_jax.compiled) take another 20-30 % off, same values (docs/speed.md).
# Other backends keep their default.
_CPU_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": "1"}


@functools.lru_cache(maxsize=16)
def _init_program(model: nn.Module, tx, image_shape: tuple):
    """rng -> {"params", "batch_stats"} of `model.init` on one zero image of `image_shape`
    (and `tx.init` of the params, unless `tx` is None), jitted once per setting: one
    compiled program, not hundreds of eagerly dispatched ops (one per initializer), and not
    traced again for an equal setting."""

    def init(rng):
        variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        # A model without BatchNorm (torchvision's VGG16) has no batch_stats: {} stands for them.
        variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        return variables if tx is None else (variables, tx.init(variables["params"]))

    backend = jax.default_backend()
    options = {**(backend_options(backend) or {}), **_CPU_INIT_COMPILER_OPTIONS} if backend == "cpu" else None
    jitted = jax.jit(init, compiler_options=options)

    def run(rng):
        # Traced (jax.eval_shape of a restore template): shapes only, and a jit nested in a
        # trace may not carry compiler options.
        return init(rng) if isinstance(rng, jax.core.Tracer) else jitted(rng)

    return run


def random_init(model: nn.Module, rng: jax.Array, image_shape=(32, 32, 3)) -> dict:
    """{"params", "batch_stats"} of `model.init` on one zero image of `image_shape`, as one
    compiled program (not hundreds of eagerly dispatched ops, one per initializer)."""
    return _init_program(model, None, tuple(image_shape))(rng)


_OPTIMIZERS: dict = {}  # (config JSON, steps per epoch) -> optax transformation; newest last


def _optimizer(config, steps_per_epoch: int):
    """`make_optimizer`'s transformation, the same object for an equal config: the train
    state's `tx` is static under jit, so a new but equal state (another run of the same
    config in this process, a resumed run) reuses the compiled steps instead of tracing and
    compiling them again."""
    key = (config.to_json(sort_keys=True), steps_per_epoch)
    if key not in _OPTIMIZERS:
        if len(_OPTIMIZERS) >= 16:
            del _OPTIMIZERS[next(iter(_OPTIMIZERS))]
        _OPTIMIZERS[key] = make_optimizer(config, steps_per_epoch, head_key=models.HEAD_KEY)
    return _OPTIMIZERS[key]


def create_train_state(
    rng: jax.Array, config, steps_per_epoch: int, image_shape=(32, 32, 3), *, pretrained: bool = True
) -> TrainState:
    """A fresh train state: the model, its PyTorch-style init (or pretrained weights), and
    the config's optimizer.

    Args:
      rng: the key of the parameter init.
      config: a run config (configs/default.py's keys).
      steps_per_epoch: optimizer steps per epoch; with `config.num_epochs` it sets the
        length of the schedule.
      image_shape: (H, W, C) of one input image (the stored size; the models' parameter
        shapes do not depend on it).
      pretrained: False skips `config.pretrained` (the random init instead): for a state
        whose values a checkpoint replaces, or shapes only.

    Returns:
      A TrainState at step 0 (an int32 array) with `step_config` taken from `config`.
      With `config.pretrained` (a .pth path or a torchvision weight name),
      params and batch_stats are `cifar_jax.pretrained.initial_variables(config, rng)`'s.
    """
    model = create_model(config)
    tx = _optimizer(config, steps_per_epoch)

    variables = None
    if pretrained and config.pretrained:
        from cifar_jax import pretrained as pretrained_weights  # torch only when asked for

        variables = pretrained_weights.initial_variables(config, rng)
    if variables is not None:  # device arrays, whatever the loader returns (numpy from torch)
        variables = jax.tree.map(jnp.asarray, variables)
        opt_state = jax.jit(tx.init)(variables["params"])
    else:
        # The random init and the optimizer's init as one program: one compile, not two.
        variables, opt_state = _init_program(model, tx, tuple(image_shape))(rng)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(
        # An int32 array, not Python's 0: the step's output has that type, and a mismatch
        # would compile the train step a second time.
        step=jnp.zeros((), jnp.int32),
        apply_fn=model.apply,
        params=params,
        batch_stats=batch_stats,
        tx=tx,
        opt_state=opt_state,
        step_config=StepConfig.from_config(config, steps_per_epoch),
    )


# How many training images a data-dependent init sees (airbench whitens on 5,000).
DATA_INIT_IMAGES = 5000


def init_from_data(state: TrainState, config, images) -> TrainState:
    """`state` with the model's data-dependent init applied, if its model has one (airbench94:
    the whitening conv from the patches of the training images, `init_from_data` of
    cifar_jax.models.airbench), and the optimizer state started again for those parameters
    (lookahead's slow weights start from them). Otherwise `state` itself.

    Call it once, on a fresh state, before the first step (the training loop does; a resumed
    run's checkpoint replaces it). It sees DATA_INIT_IMAGES of the uint8 NHWC `images`, evenly
    strided (so a class-sorted image folder gives every class its share), normalised and
    resized as the steps do, on the device."""
    model = create_model(config)
    hook = getattr(model, "init_from_data", None)
    if hook is None:
        return state
    stride = max(1, len(images) // DATA_INIT_IMAGES)
    sample = jnp.asarray(images[::stride][:DATA_INIT_IMAGES])
    settings = state.step_config
    params = hook(state.params, model_input(sample, settings.mean, settings.std, settings.image_size))
    return state.replace(params=params, opt_state=jax.jit(state.tx.init)(params))


def _weights(batch) -> jax.Array:
    mask = batch.get("mask")
    if mask is None:
        return jnp.ones(batch["label"].shape, jnp.float32)
    return mask.astype(jnp.float32)


def cross_entropy(logits, labels, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy of integer `labels`; with `label_smoothing` a > 0, against the
    targets (1 - a) one-hot + a / classes (optax.smooth_labels; torch's label_smoothing)."""
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _metrics(logits, labels, weight) -> dict:
    losses = cross_entropy(logits, labels)
    count = jnp.sum(weight)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {
        "loss": jnp.sum(losses * weight) / count,
        "accuracy": jnp.sum(correct * weight) / count,
        "count": count,
    }


def head_only(params):
    """`params` with a stopped gradient everywhere outside the head (`models.HEAD_KEY`): the
    backward pass then ends at the head, as for a torch backbone with requires_grad=False."""
    return {key: value if key == models.HEAD_KEY else jax.lax.stop_gradient(value)
            for key, value in params.items()}


def _gradients(state: TrainState, params, batch_stats, images, labels, weight, mask, dropout_rng, count):
    """One forward and backward pass over (micro)batch `images` (normalised, stored size).

    The loss differentiated is sum(cross-entropy * weight) / `count`, `count` being the
    real examples of the whole batch: gradients of the microbatches of a batch add up to
    the batch's mean-loss gradient.

    Returns:
      (grads, sums, batch_stats): `sums` holds the weighted sums "loss" and "correct";
      `batch_stats` the running statistics after this pass (unchanged when frozen).
    """
    settings = state.step_config
    images = resize(images, settings.image_size)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": batch_stats}
        if settings.freeze_backbone:
            # Feature extraction: BatchNorm on its running statistics, left as they are.
            logits = state.apply_fn({**variables, "params": head_only(params)}, images, train=False)
            new_stats = batch_stats
        else:
            logits, updates = state.apply_fn(
                variables,
                images,
                train=True,
                mask=mask,
                mutable=["batch_stats"],
                rngs={"dropout": dropout_rng},  # dropout / stochastic depth
            )
            new_stats = updates.get("batch_stats", {})
        losses = cross_entropy(logits, labels, settings.label_smoothing)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        sums = {"loss": jnp.sum(losses * weight), "correct": jnp.sum(correct * weight)}
        return sums["loss"] / count, (sums, new_stats)

    grads, (sums, new_stats) = jax.grad(loss_fn, has_aux=True)(params)
    return grads, sums, new_stats


def _microbatches(x: jax.Array, k: int) -> jax.Array:
    """(B, ...) -> (k, B/k, ...): microbatch j holds examples j, j + k, j + 2k, ... (strided:
    with the batch split over devices, each microbatch still spans all of them)."""
    return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)


def _accumulated_gradients(state: TrainState, images, labels, weight, mask, dropout_rng, count):
    """`_gradients` over `grad_accum_steps` microbatches in a lax.scan: gradients and sums
    added up, BatchNorm statistics carried from one microbatch's pass to the next (as k
    torch forward passes in train mode would leave them)."""
    k = state.step_config.grad_accum_steps
    real = mask if mask is not None else jnp.ones(labels.shape, bool)
    xs = (jnp.arange(k),) + tuple(_microbatches(x, k) for x in (images, labels, weight, real))

    def body(carry, xs):
        grads, sums, batch_stats = carry
        index, images, labels, weight, real = xs
        # A microbatch of padding only (the end of a short last batch) would give BatchNorm
        # 0/0 statistics: it runs as if real, its loss weight (0) makes its gradient exactly
        # 0, and its statistics update is dropped.
        has_real = jnp.any(real)
        micro_mask = None if mask is None else real | ~has_real
        g, s, new_stats = _gradients(state, state.params, batch_stats, images, labels, weight, micro_mask,
                                     jax.random.fold_in(dropout_rng, index), count)
        new_stats = jax.tree.map(lambda new, old: jnp.where(has_real, new, old), new_stats, batch_stats)
        return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, s), new_stats), None

    zeros = (jax.tree.map(jnp.zeros_like, state.params),
             {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.float32)},
             state.batch_stats)
    (grads, sums, batch_stats), _ = jax.lax.scan(body, zeros, xs)
    return grads, sums, batch_stats


def _flips(state: TrainState, batch: dict, rng: jax.Array):
    """The alternating flips of the batch's examples (None: random flips, drawn by augment)."""
    settings = state.step_config
    if not settings.alternating_flip:
        return None
    if "index" not in batch or settings.steps_per_epoch < 1:
        raise ValueError("alternating_flip needs the batch's \"index\" (dataset indices of its examples) and "
                         "a train state made with its steps_per_epoch (create_train_state)")
    # A key of its own, the same every step: the epoch-0 flips are a function of the index.
    flip_key = jax.random.split(rng)[1]
    return alternating_flips(flip_key, batch["index"], state.step // settings.steps_per_epoch)


@tuned_jit
def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`, with augmentation if `state.step_config.augment`.

    The images are cropped and flipped at their stored size, normalised, and resized to
    `step_config.image_size`; with `step_config.grad_accum_steps` = k > 1 the batch runs
    as k microbatches (see StepConfig) and one update is applied.

    Args:
      state: the train state before the step.
      batch: {"image": uint8 (B, H, W, 3), "label": int (B,), optionally "mask": bool (B,)
        and "index": int (B,), the examples' dataset indices (needed by alternating_flip)};
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
    count = jnp.sum(weight)
    step_rng = jax.random.fold_in(rng, state.step)
    images = augment(step_rng, batch["image"], settings.crop_padding, _flips(state, batch, rng)) \
        if settings.augment else batch["image"]
    images = normalize(images, settings.mean, settings.std)  # resized per (micro)batch
    dropout_rng = jax.random.fold_in(step_rng, 1)

    if settings.grad_accum_steps == 1:
        grads, sums, batch_stats = _gradients(state, state.params, state.batch_stats, images, batch["label"],
                                              weight, mask, dropout_rng, count)
    else:
        grads, sums, batch_stats = _accumulated_gradients(state, images, batch["label"], weight, mask,
                                                          dropout_rng, count)
    metrics = {"loss": sums["loss"] / count, "accuracy": sums["correct"] / count, "count": count}
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


def inference_logits(apply_fn, variables, images, mean, std, image_size: int, tta_level: int = 0) -> jax.Array:
    """The model's inference-mode logits of uint8 NHWC `images`: normalised, resized to
    `image_size`, and with `tta_level` > 0 averaged over the test-time views
    (augment.tta_logits). What eval_step and cifar_jax.evaluate both compute."""
    return tta_logits(lambda x: apply_fn(variables, resize(x, image_size), train=False),
                      normalize(images, mean, std), tta_level)


@tuned_jit
def eval_step(state: TrainState, batch: dict) -> dict:
    """The model in inference mode (running BatchNorm statistics, no augmentation) on `batch`,
    normalised and resized to `step_config.image_size` as in training; with
    `step_config.tta_level` > 0, the logits are those of the test-time views averaged
    (augment.tta_logits).

    Args:
      state: a train state (only params, batch_stats and step_config are read).
      batch: as for `train_step`; masked-out examples count for nothing.

    Returns:
      Scalars `loss` and `accuracy` over the real examples, and their `count`.
    """
    settings = state.step_config
    logits = inference_logits(state.apply_fn, {"params": state.params, "batch_stats": state.batch_stats},
                              batch["image"], settings.mean, settings.std, settings.image_size, settings.tta_level)
    return _metrics(logits, batch["label"], _weights(batch))
