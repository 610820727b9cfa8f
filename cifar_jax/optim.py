"""The optimizers as optax chains: clip -> weight decay -> Adam or SGD -> scheduled lr.

The seed's (the default): clip -> coupled L2 -> Adam -> one-cycle lr, with beta1 cycled.
The pieces, each a small optax transformation or schedule:
- optimizer: "adam" (`optax.scale_by_adam`) or "sgd" (`optax.trace`: torch's momentum buffer,
  buf = momentum * buf + grad with buf = grad at the first step, nesterov: grad + momentum * buf);
- schedule: "onecycle", "cosine" (linear warmup, then cosine to 0) or "step" (MultiStepLR);
- backbone vs head: `optax.multi_transform` over `param_labels`, used only when the backbone
  gets another lr (`backbone_lr_mult`) or none (`freeze_backbone`), so that the default
  optimizer's state, which checkpoints hold, keeps its structure.

PyTorch details matched here (each silently changes results when missed):
- `clip_grad_value_` clips every gradient element, so `optax.clip`, not a norm clip;
- `Adam(weight_decay=wd)` and `SGD(weight_decay=wd)` add wd * param to the (already clipped)
  gradient before the moments ("l2"); "adamw" instead decays the weights outside Adam or the
  momentum, scaled by the lr (AdamW; with SGD it is SGDW, which torch does not have);
- `OneCycleLR` defaults: cosine phases that meet at step pct_start * total - 1, start at
  max_lr / div_factor, end at that / final_div_factor, and cycle Adam's beta1 (or SGD's
  momentum) inversely.
"""
from __future__ import annotations

import jax
import optax

from cifar_jax.errors import ConfigError

WEIGHT_DECAY_MODES = ("l2", "adamw")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "step")

# The optimizer keys added after the seed recipe, with the values that keep its behaviour:
# a config without them (an older run's config.json) trains as it did.
ADDED_KEY_DEFAULTS = {
    "optimizer": "adam",
    "momentum": 0.9,
    "nesterov": True,
    "schedule": "onecycle",
    "warmup_epochs": 0.0,
    "warmup_start_factor": 0.01,
    "lr_decay_epochs": (10, 20),
    "lr_decay_factor": 0.1,
    "backbone_lr_mult": 1.0,
    "freeze_backbone": False,
    "pretrained": "",  # cifar_jax.pretrained: a run saved before the key started from scratch
}


def _get(config, key: str):
    return config.get(key, ADDED_KEY_DEFAULTS[key])


def _one_cycle(total_steps: int, pct_start: float, start: float, peak: float, end: float):
    """A cosine one-cycle schedule with torch's phase boundaries (float steps, as torch uses)."""
    # Not optax.cosine_onecycle_schedule: torch's phases end at steps pct*T - 1 and T - 1,
    # optax's at int(pct*T) and T, so every lr would differ from torch's slightly.
    peak_step = float(pct_start * total_steps) - 1
    last_step = float(total_steps) - 1
    return optax.piecewise_interpolate_schedule(
        "cosine",
        init_value=start,
        boundaries_and_scales={peak_step: peak / start, last_step: end / peak},
    )


def one_cycle_schedules(config, total_steps: int):
    """(learning_rate, beta1) schedules of the optimizer step, as torch's OneCycleLR gives them
    (with SGD the second one is the momentum)."""
    peak_step = config.pct_start * total_steps - 1
    if not 0 < peak_step < total_steps - 1:
        raise ConfigError(
            f"the one-cycle schedule needs more steps than {total_steps} with "
            f"pct_start={config.pct_start}; raise --config.num_epochs or lower --config.batch_size"
        )
    initial_lr = config.learning_rate / config.div_factor
    learning_rate = _one_cycle(
        total_steps,
        config.pct_start,
        initial_lr,
        config.learning_rate,
        initial_lr / config.final_div_factor,
    )
    beta1 = _one_cycle(
        total_steps, config.pct_start, config.beta1_max, config.beta1_min, config.beta1_max
    )
    return learning_rate, beta1


def warmup_cosine_schedule(peak: float, total_steps: int, warmup_steps: int, start_factor: float):
    """torchvision's recipe: `SequentialLR([LinearLR(start_factor, total_iters=W),
    CosineAnnealingLR(T_max=T - W)], milestones=[W])`: peak * start_factor rising linearly
    to peak at step W, then cosine down to 0 at step T (the last step, T - 1, is just above)."""
    cosine = optax.cosine_decay_schedule(peak, total_steps - warmup_steps)
    if not warmup_steps:
        return cosine
    warmup = optax.linear_schedule(peak * start_factor, peak, warmup_steps)
    return optax.join_schedules([warmup, cosine], [warmup_steps])


def warmup_step_schedule(base: float, boundaries, factor: float, warmup_steps: int, start_factor: float):
    """`ChainedScheduler([LinearLR(start_factor, total_iters=W), MultiStepLR(boundaries, factor)])`:
    base times `factor` for each boundary step reached, times the linear warmup factor (from
    start_factor to 1 over W steps); the boundaries count from step 0, warmup included."""
    decay = optax.piecewise_constant_schedule(base, {int(b): factor for b in boundaries})
    if not warmup_steps:
        return decay
    warmup = optax.linear_schedule(start_factor, 1.0, warmup_steps)
    return lambda count: warmup(count) * decay(count)


def schedules(config, steps_per_epoch: int):
    """(learning_rate, momentum) of the optimizer step: schedules, or a constant momentum.

    The momentum is SGD's momentum or Adam's beta1: "onecycle" cycles it from beta1_max to
    beta1_min and back (torch OneCycleLR's cycle_momentum, for Adam and SGD alike); "cosine"
    and "step" keep `config.momentum`."""
    total_steps = config.num_epochs * steps_per_epoch
    name = _get(config, "schedule")
    if name == "onecycle":
        return one_cycle_schedules(config, total_steps)
    warmup_steps = round(_get(config, "warmup_epochs") * steps_per_epoch)
    if warmup_steps >= total_steps:
        raise ConfigError(
            f"warmup_epochs={_get(config, 'warmup_epochs')} leaves no step after the warmup of "
            f"{total_steps} steps; lower --config.warmup_epochs or raise --config.num_epochs"
        )
    start_factor = _get(config, "warmup_start_factor")
    if name == "cosine":
        learning_rate = warmup_cosine_schedule(config.learning_rate, total_steps, warmup_steps, start_factor)
    else:
        boundaries = [epoch * steps_per_epoch for epoch in _get(config, "lr_decay_epochs")]
        learning_rate = warmup_step_schedule(
            config.learning_rate, boundaries, _get(config, "lr_decay_factor"), warmup_steps, start_factor
        )
    return learning_rate, _get(config, "momentum")


def check_weight_decay_mode(mode: str) -> None:
    if mode not in WEIGHT_DECAY_MODES:
        raise ConfigError(
            f"unknown weight_decay_mode {mode!r}; use --config.weight_decay_mode=l2 "
            "(torch Adam/SGD weight_decay) or adamw (decoupled)"
        )


def check_optimizer_config(config) -> None:
    """ConfigError (one line, naming key and fix) for a bad optimizer or schedule key."""
    check_weight_decay_mode(config.weight_decay_mode)

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    optimizer, schedule = _get(config, "optimizer"), _get(config, "schedule")
    require(optimizer in OPTIMIZERS, f"unknown optimizer {optimizer!r}; use --config.optimizer=adam or sgd")
    require(schedule in SCHEDULES, f"unknown schedule {schedule!r}; use --config.schedule=onecycle, cosine or step")
    momentum = _get(config, "momentum")
    require(0 <= momentum < 1, f"momentum={momentum} must lie in [0, 1); set --config.momentum")
    require(
        not (optimizer == "sgd" and _get(config, "nesterov") and momentum == 0 and schedule != "onecycle"),
        "nesterov needs a momentum above 0 (as torch.optim.SGD); set --config.momentum or --config.nesterov=false",
    )
    warmup = _get(config, "warmup_epochs")
    require(0 <= warmup < config.num_epochs, f"warmup_epochs={warmup} must lie in [0, num_epochs); set --config.warmup_epochs")
    require(
        not (warmup and schedule == "onecycle"),
        "warmup_epochs is for the cosine and step schedules (onecycle warms up over pct_start); "
        "set --config.warmup_epochs=0 or --config.schedule=cosine",
    )
    start = _get(config, "warmup_start_factor")
    require(0 < start <= 1, f"warmup_start_factor={start} must lie in (0, 1]; set --config.warmup_start_factor")
    epochs = tuple(_get(config, "lr_decay_epochs"))
    require(
        all(isinstance(e, int) and not isinstance(e, bool) and e > 0 for e in epochs)
        and list(epochs) == sorted(set(epochs)),
        f"lr_decay_epochs={epochs} must be increasing positive integers; set e.g. --config.lr_decay_epochs='(10, 20)'",
    )
    require(
        schedule != "step" or all(e < config.num_epochs for e in epochs),
        f"lr_decay_epochs={epochs} has an epoch at or past num_epochs={config.num_epochs}, where no "
        "decay happens; set --config.lr_decay_epochs",
    )
    factor = _get(config, "lr_decay_factor")
    require(factor > 0, f"lr_decay_factor={factor} must be positive; set --config.lr_decay_factor")
    mult = _get(config, "backbone_lr_mult")
    require(mult > 0, f"backbone_lr_mult={mult} must be positive (freeze with --config.freeze_backbone=true); "
                      "set --config.backbone_lr_mult")


def param_labels(params, head_key: str):
    """The tree of `params` with "head" at every leaf under the top-level key `head_key` and
    "backbone" everywhere else (the labels of `optax.multi_transform`)."""
    if head_key not in params:
        raise ConfigError(
            f"the model has no top-level parameter {head_key!r} to train as the head; its top-level "
            f"parameters are {', '.join(map(repr, params))}"
        )
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "head" if getattr(path[0], "key", None) == head_key else "backbone", params
    )


def current_learning_rate(opt_state) -> jax.Array:
    """The learning rate of the last update (the first one's before any update) of any
    optimizer that `make_optimizer` builds: the head's, which is the scheduled base lr."""
    return opt_state.hyperparams["learning_rate"]


def make_optimizer(config, steps_per_epoch: int, head_key: str | None = None) -> optax.GradientTransformation:
    """The optimizer the config describes; its state exposes the current `learning_rate`
    and the momentum (`b1` for Adam, `momentum` for SGD) under `opt_state.hyperparams`.

    head_key: the model's top-level parameter key of its head (the zoo's models: "classifier"),
    needed only when `backbone_lr_mult` != 1 or `freeze_backbone`: every other parameter then
    gets learning_rate * backbone_lr_mult, or no update at all and no optimizer state.
    """
    check_optimizer_config(config)
    mode = config.weight_decay_mode
    learning_rate, momentum = schedules(config, steps_per_epoch)
    sgd = _get(config, "optimizer") == "sgd"
    nesterov = bool(_get(config, "nesterov"))
    mult, freeze = _get(config, "backbone_lr_mult"), bool(_get(config, "freeze_backbone"))

    def chain(learning_rate, b1):
        clip = [optax.clip(config.grad_clip)] if config.grad_clip > 0 else []
        decay = [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay else []
        if sgd:
            rule = [optax.trace(decay=b1, nesterov=nesterov)]
        else:
            rule = [optax.scale_by_adam(b1=b1, b2=config.beta2, eps=config.adam_eps)]
        order = clip + decay + rule if mode == "l2" else clip + rule + decay
        return optax.chain(*order, optax.scale_by_learning_rate(learning_rate))

    factory = chain
    if freeze or mult != 1:
        if head_key is None:
            raise ConfigError(
                f"model {config.get('model', 'resnet9')} has no head to separate; "
                "set --config.backbone_lr_mult=1 and --config.freeze_backbone=false"
            )

        def factory(learning_rate, b1):
            backbone = optax.set_to_zero() if freeze else chain(learning_rate * mult, b1)
            return optax.multi_transform(
                {"head": chain(learning_rate, b1), "backbone": backbone},
                lambda params: param_labels(params, head_key),
            )

    if sgd:  # the hyperparameter's name in the state: "momentum", as in torch's SGD
        return optax.inject_hyperparams(lambda learning_rate, momentum: factory(learning_rate, momentum))(
            learning_rate=learning_rate, momentum=momentum
        )
    return optax.inject_hyperparams(factory)(learning_rate=learning_rate, b1=momentum)
