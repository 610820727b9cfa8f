"""The seed's optimizer as an optax chain: clip -> weight decay -> Adam -> one-cycle lr.

PyTorch details matched here (each silently changes results when missed):
- `clip_grad_value_` clips every gradient element, so `optax.clip`, not a norm clip;
- `Adam(weight_decay=wd)` adds wd * param to the (already clipped) gradient before the
  moments ("l2"); "adamw" instead decays the weights outside Adam, scaled by the lr;
- `OneCycleLR` defaults: cosine phases that meet at step pct_start * total - 1, start at
  max_lr / div_factor, end at that / final_div_factor, and cycle Adam's beta1 inversely.
"""
from __future__ import annotations

import optax

from cifar_jax.errors import ConfigError

WEIGHT_DECAY_MODES = ("l2", "adamw")


def _one_cycle(total_steps: int, pct_start: float, start: float, peak: float, end: float):
    """A cosine one-cycle schedule with torch's phase boundaries (float steps, as torch uses)."""
    # Not optax.cosine_onecycle_schedule: torch's phases end at steps pct*T - 1 and T - 1, optax's at int(pct*T) and T.
    peak_step = float(pct_start * total_steps) - 1
    last_step = float(total_steps) - 1
    return optax.piecewise_interpolate_schedule(
        "cosine",
        init_value=start,
        boundaries_and_scales={peak_step: peak / start, last_step: end / peak},
    )


def one_cycle_schedules(config, total_steps: int):
    """The learning rate and Adam beta1 schedules of torch's OneCycleLR.

    Args:
      config: a run config (`learning_rate`, `pct_start`, `div_factor`, `final_div_factor`,
        `beta1_max`, `beta1_min`).
      total_steps: optimizer steps of the whole run.

    Returns:
      (learning_rate, beta1): optax schedules, functions of the optimizer step.
    """
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


def check_weight_decay_mode(mode: str) -> None:
    """Raises ConfigError unless `mode` is one of WEIGHT_DECAY_MODES."""
    if mode not in WEIGHT_DECAY_MODES:
        raise ConfigError(
            f"unknown weight_decay_mode {mode!r}; use --config.weight_decay_mode=l2 "
            "(torch Adam weight_decay) or adamw (decoupled)"
        )


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """The seed's optimizer: clip -> weight decay (l2) -> Adam -> one-cycle lr, or with
    `weight_decay_mode="adamw"` the decay after Adam.

    Args:
      config: a run config (the optimizer keys of configs/default.py, and `num_epochs`).
      steps_per_epoch: optimizer steps per epoch (the schedule spans num_epochs of them).

    Returns:
      An optax GradientTransformation; its state exposes the current `learning_rate` and
      `b1` under `opt_state.hyperparams`.
    """
    mode = config.weight_decay_mode
    check_weight_decay_mode(mode)
    learning_rate, beta1 = one_cycle_schedules(config, config.num_epochs * steps_per_epoch)

    def chain(learning_rate, b1):
        clip = [optax.clip(config.grad_clip)] if config.grad_clip > 0 else []
        decay = [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay else []
        adam = [optax.scale_by_adam(b1=b1, b2=config.beta2, eps=config.adam_eps)]
        order = clip + decay + adam if mode == "l2" else clip + adam + decay
        return optax.chain(*order, optax.scale_by_learning_rate(learning_rate))

    return optax.inject_hyperparams(chain)(learning_rate=learning_rate, b1=beta1)
