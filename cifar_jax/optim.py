"""The optimizers as optax chains: clip -> weight decay -> Adam or SGD -> scheduled lr.

The seed's (the default): clip -> coupled L2 -> Adam -> one-cycle lr, with beta1 cycled.
The pieces, each a small optax transformation or schedule:
- optimizer: "adam" (`optax.scale_by_adam`) or "sgd" (`optax.trace`: torch's momentum buffer,
  buf = momentum * buf + grad with buf = grad at the first step, nesterov: grad + momentum * buf);
- schedule: "onecycle", "cosine" (linear warmup, then cosine to 0) or "step" (MultiStepLR);
- optimizer "muon": `optax.contrib.scale_by_muon` (orthogonalised momentum) for the conv
  kernels (4-D parameters), the "sgd" chain for the rest (airbench94_muon's split);
- schedule "triangle": airbench's piecewise-linear lr, up from warmup_start_factor to 1 at
  pct_start of the run, down to final_lr_factor at its end;
- parameter groups: `optax.multi_transform` over `param_labels`, used only when some
  parameters are treated apart: the backbone gets another lr (`backbone_lr_mult`) or none
  (`freeze_backbone`), the norm layers' biases another lr (`bn_bias_lr_mult`), some
  parameters no update (`frozen_params`), airbench's whitening bias updates for its first
  epochs only (`whiten_bias_epochs`), conv kernels Muon. Otherwise one chain, so that the
  default optimizer's state, which checkpoints hold, keeps its structure;
- lookahead (`lookahead_every`): airbench's EMA of the weights, after the rest of the chain.

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

import fnmatch
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from cifar_jax.errors import ConfigError

WEIGHT_DECAY_MODES = ("l2", "adamw")
OPTIMIZERS = ("adam", "sgd", "muon")
SCHEDULES = ("onecycle", "cosine", "step", "triangle")
# airbench94's whitening conv bias, which `whiten_bias_epochs` trains for the first epochs only.
WHITEN_BIAS = "whiten/bias"


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


def triangle_schedule(peak: float, total_steps: int, pct: float, start_factor: float, end_factor: float):
    """airbench's schedule: the lr at step s is peak times the piecewise-linear interpolation of
    (0, start_factor), (int(pct * T), 1), (T, end_factor) at s, T = total_steps (np.interp)."""
    peak_step = int(pct * total_steps)
    if not 0 < peak_step < total_steps:
        raise ConfigError(
            f"the triangle schedule needs more steps than {total_steps} with pct_start={pct}; raise "
            "--config.num_epochs or lower --config.batch_size"
        )
    xp = jnp.asarray([0.0, peak_step, total_steps], jnp.float32)
    fp = jnp.asarray([start_factor, 1.0, end_factor], jnp.float32) * peak
    return lambda count: jnp.interp(jnp.asarray(count, jnp.float32), xp, fp)


def schedules(config, steps_per_epoch: int):
    """(learning_rate, momentum) of the optimizer step: schedules, or a constant momentum.

    The momentum is SGD's momentum or Adam's beta1: "onecycle" cycles it from beta1_max to
    beta1_min and back (torch OneCycleLR's cycle_momentum, for Adam and SGD alike); "cosine"
    and "step" keep `config.momentum`."""
    total_steps = config.num_epochs * steps_per_epoch
    name = config.schedule
    if name == "onecycle":
        return one_cycle_schedules(config, total_steps)
    if name == "triangle":
        learning_rate = triangle_schedule(config.learning_rate, total_steps, config.pct_start,
                                          config.warmup_start_factor, config.final_lr_factor)
        return learning_rate, config.momentum
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        raise ConfigError(
            f"warmup_epochs={config.warmup_epochs} leaves no step after the warmup of "
            f"{total_steps} steps; lower --config.warmup_epochs or raise --config.num_epochs"
        )
    start_factor = config.warmup_start_factor
    if name == "cosine":
        learning_rate = warmup_cosine_schedule(config.learning_rate, total_steps, warmup_steps, start_factor)
    else:
        boundaries = [epoch * steps_per_epoch for epoch in config.lr_decay_epochs]
        learning_rate = warmup_step_schedule(
            config.learning_rate, boundaries, config.lr_decay_factor, warmup_steps, start_factor
        )
    return learning_rate, config.momentum


def check_weight_decay_mode(mode: str) -> None:
    """Raises ConfigError unless `mode` is one of WEIGHT_DECAY_MODES."""
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

    optimizer, schedule = config.optimizer, config.schedule
    require(optimizer in OPTIMIZERS, f"unknown optimizer {optimizer!r}; use --config.optimizer=adam, sgd or muon")
    require(schedule in SCHEDULES,
            f"unknown schedule {schedule!r}; use --config.schedule=onecycle, cosine, step or triangle")
    momentum = config.momentum
    require(0 <= momentum < 1, f"momentum={momentum} must lie in [0, 1); set --config.momentum")
    require(
        not (optimizer in ("sgd", "muon") and config.nesterov and momentum == 0 and schedule != "onecycle"),
        "nesterov needs a momentum above 0 (as torch.optim.SGD); set --config.momentum or --config.nesterov=false",
    )
    warmup = config.warmup_epochs
    require(0 <= warmup < config.num_epochs, f"warmup_epochs={warmup} must lie in [0, num_epochs); set --config.warmup_epochs")
    require(
        not (warmup and schedule in ("onecycle", "triangle")),
        f"warmup_epochs is for the cosine and step schedules ({schedule} warms up over pct_start); "
        "set --config.warmup_epochs=0 or --config.schedule=cosine",
    )
    start = config.warmup_start_factor
    require(0 < start <= 1, f"warmup_start_factor={start} must lie in (0, 1]; set --config.warmup_start_factor")
    epochs = tuple(config.lr_decay_epochs)
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
    factor = config.lr_decay_factor
    require(factor > 0, f"lr_decay_factor={factor} must be positive; set --config.lr_decay_factor")
    mult = config.backbone_lr_mult
    require(mult > 0, f"backbone_lr_mult={mult} must be positive (freeze with --config.freeze_backbone=true); "
                      "set --config.backbone_lr_mult")
    require(config.bn_bias_lr_mult > 0, f"bn_bias_lr_mult={config.bn_bias_lr_mult} must be positive; "
                                        "set --config.bn_bias_lr_mult")
    require(config.final_lr_factor >= 0, f"final_lr_factor={config.final_lr_factor} must be zero or positive; "
                                         "set --config.final_lr_factor")
    require(0 <= config.lookahead_decay <= 1, f"lookahead_decay={config.lookahead_decay} must lie in [0, 1]; "
                                              "set --config.lookahead_decay")
    require(config.muon_lr > 0, f"muon_lr={config.muon_lr} must be positive; "
                                           "set --config.muon_lr")
    require(0 <= config.muon_momentum < 1, f"muon_momentum={config.muon_momentum} must lie in [0, 1); "
                                           "set --config.muon_momentum")
    require(isinstance(config.frozen_params, str),
            "frozen_params must be comma-separated patterns of parameter paths (\"\" for none); "
            "set --config.frozen_params")


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


def frozen_patterns(config) -> tuple[str, ...]:
    """`config.frozen_params` split: fnmatch patterns of "/"-joined parameter paths."""
    return tuple(p.strip() for p in config.frozen_params.split(",") if p.strip())


def is_norm_bias(path: str) -> bool:
    """A norm layer's bias: the leaf `bias` of a module whose name holds "norm" (any case),
    e.g. `group1/BatchNorm_0/bias` (airbench's 'norm' in the parameter's name)."""
    parts = path.split("/")
    return parts[-1] == "bias" and len(parts) > 1 and "norm" in parts[-2].lower()


def _path(key_path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def group_labels(params, config, head_key=None):
    """The label of every parameter, for `optax.multi_transform` (see make_optimizer):
    "frozen" (a `frozen_params` pattern matches its path), else "head" or "backbone" (the
    head only when `backbone_lr_mult` != 1 or `freeze_backbone`; a frozen backbone is all
    "backbone"), followed by ":timed" (airbench's whitening bias, with whiten_bias_epochs),
    ":norm_bias" (with bn_bias_lr_mult != 1) or ":muon" (a 4-D kernel, with optimizer muon)."""
    patterns = frozen_patterns(config)
    split_head = bool(config.freeze_backbone) or config.backbone_lr_mult != 1
    if split_head and head_key not in params:
        param_labels(params, head_key)  # the one-line error naming the top-level keys

    def label(key_path, leaf):
        path = _path(key_path)
        if any(fnmatch.fnmatchcase(path, p) for p in patterns):
            return "frozen"
        group = "head" if split_head and path.split("/")[0] == head_key else "backbone"
        if group == "backbone" and config.freeze_backbone:
            return group
        if config.whiten_bias_epochs and path == WHITEN_BIAS:
            return group + ":timed"
        if config.bn_bias_lr_mult != 1 and is_norm_bias(path):
            return group + ":norm_bias"
        if config.optimizer == "muon" and leaf.ndim == 4:
            return group + ":muon"
        return group

    return jax.tree_util.tree_map_with_path(label, params)


def _needs_groups(config) -> bool:
    return bool(config.freeze_backbone or config.backbone_lr_mult != 1 or config.bn_bias_lr_mult != 1
                or frozen_patterns(config) or config.whiten_bias_epochs or config.optimizer == "muon")


class LookaheadState(NamedTuple):
    """`lookahead`'s state: the updates applied so far and the slow (EMA) weights."""

    count: jax.Array
    slow: optax.Params


def lookahead(every: int, decay: float, total_steps: int) -> optax.GradientTransformation:
    """airbench's lookahead, as the last transformation of a chain: the weights the chain's
    updates lead to are the fast weights; after every `every`-th update the slow weights move
    towards them, slow += (1 - d) (fast - slow) with d = decay**every * (t / total_steps)**3
    (t: updates so far), and the weights are set to the slow ones; after update total_steps
    they are set to the slow weights whatever t is (airbench's last step, with d = 1). The
    slow weights start as the parameters `init` gets.

    It averages the parameters only: BatchNorm's running statistics, which airbench's lookahead
    averages too, are not the optimizer's (they follow the fast weights, at momentum 0.4)."""
    base = decay**every

    def init(params):
        return LookaheadState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("lookahead needs the parameters: tx.update(updates, state, params)")
        count = state.count + 1
        sync = count % every == 0
        d = base * (count.astype(jnp.float32) / total_steps) ** 3
        fast = jax.tree.map(lambda p, u: p + u, params, updates)
        slow = jax.tree.map(lambda s, f: jnp.where(sync, s + (1 - d) * (f - s), s), state.slow, fast)
        use_slow = sync | (count == total_steps)
        new_updates = jax.tree.map(lambda p, f, s: jnp.where(use_slow, s, f) - p, params, fast, slow)
        return new_updates, LookaheadState(count, slow)

    return optax.GradientTransformation(init, update)


# Muon orthogonalises a conv kernel (kh, kw, in, out) as the (kh * kw * in, out) matrix.
_CONV_DIMS = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)


def current_learning_rate(opt_state) -> jax.Array:
    """The learning rate of the last update (the first one's before any update) of any
    optimizer that `make_optimizer` builds: the head's, which is the scheduled base lr."""
    return opt_state.hyperparams["learning_rate"]


def make_optimizer(config, steps_per_epoch: int, head_key: str | None = None) -> optax.GradientTransformation:
    """The optimizer the config describes: clip -> weight decay (l2) -> Adam or SGD momentum
    -> (adamw decay) -> the schedule's learning rate [-> lookahead].

    Args:
      config: a run config (the optimizer keys of configs/default.py, and `num_epochs`).
      steps_per_epoch: optimizer steps per epoch (the schedules span num_epochs of them).
      head_key: the model's top-level parameter key of its head (the zoo's models:
        "classifier"), needed only when `backbone_lr_mult` != 1 or `freeze_backbone`: every
        other parameter then gets learning_rate * backbone_lr_mult, or no update at all and
        no optimizer state.

    Parameter groups (`group_labels`), each its own chain when any is used:
    - `frozen_params` patterns: no update, no state (`optax.set_to_zero`);
    - norm biases with `bn_bias_lr_mult` = m: the lr times m and the weight decay divided
      by m (their product, the decay per step, unchanged: airbench's bias_scaler);
    - airbench's whitening bias with `whiten_bias_epochs` = E: its updates end after E epochs
      (airbench stops its gradient; torch's SGD then skips it, momentum and decay included);
    - optimizer "muon": conv kernels get `optax.contrib.scale_by_muon` (Nesterov momentum
      `muon_momentum`, 5 Newton-Schulz steps), lr `muon_lr` times the schedule's
      factor, no weight decay; every other parameter the "sgd" chain.

    Returns:
      An optax GradientTransformation; its state exposes the current `learning_rate` and
      the momentum (`b1` for Adam, `momentum` for SGD and Muon's SGD part) under
      `opt_state.hyperparams`.
    """
    check_optimizer_config(config)
    mode = config.weight_decay_mode
    learning_rate, momentum = schedules(config, steps_per_epoch)
    sgd = config.optimizer in ("sgd", "muon")
    nesterov = bool(config.nesterov)
    mult, freeze = config.backbone_lr_mult, bool(config.freeze_backbone)
    total_steps = config.num_epochs * steps_per_epoch

    def chain(learning_rate, b1, weight_decay=config.weight_decay):
        clip = [optax.clip(config.grad_clip)] if config.grad_clip > 0 else []
        decay = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
        if sgd:
            rule = [optax.trace(decay=b1, nesterov=nesterov)]
        else:
            rule = [optax.scale_by_adam(b1=b1, b2=config.beta2, eps=config.adam_eps)]
        order = clip + decay + rule if mode == "l2" else clip + rule + decay
        return optax.chain(*order, optax.scale_by_learning_rate(learning_rate))

    split_head = freeze or mult != 1
    bn = config.bn_bias_lr_mult
    timed_steps = config.whiten_bias_epochs * steps_per_epoch
    # The kinds of parameter this config treats apart (group_labels' suffixes).
    kinds = [kind for kind, used in ((":norm_bias", bn != 1), (":timed", config.whiten_bias_epochs > 0),
                                     (":muon", config.optimizer == "muon")) if used]

    def kind_chain(kind, lr, b1):
        if kind == ":norm_bias":
            return chain(lr * bn, b1, config.weight_decay / bn)
        if kind == ":timed":
            return optax.chain(chain(lr, b1),
                               optax.scale_by_schedule(lambda count: (count < timed_steps).astype(jnp.float32)))
        clip = [optax.clip(config.grad_clip)] if config.grad_clip > 0 else []
        muon = optax.contrib.scale_by_muon(beta=config.muon_momentum, nesterov=nesterov,
                                           weight_dimension_numbers=lambda u: jax.tree.map(lambda _: _CONV_DIMS, u))
        return optax.chain(*clip, muon, optax.scale_by_learning_rate(lr * (config.muon_lr
                                                                             / config.learning_rate)))

    def groups(learning_rate, b1):  # parameter groups: only when some are treated apart
        transforms = {"frozen": optax.set_to_zero()} if frozen_patterns(config) else {}
        for group, lr in (("head", learning_rate), ("backbone", learning_rate * mult)):
            if group == "head" and not split_head:
                continue
            if group == "backbone" and freeze:
                transforms[group] = optax.set_to_zero()
                continue
            transforms[group] = chain(lr, b1)
            transforms.update({group + kind: kind_chain(kind, lr, b1) for kind in kinds})
        return optax.multi_transform(transforms, lambda params: group_labels(params, config, head_key))

    if (freeze or mult != 1) and head_key is None:
        raise ConfigError(
            f"model {config.model} has no head to separate; "
            "set --config.backbone_lr_mult=1 and --config.freeze_backbone=false"
        )
    rule = groups if _needs_groups(config) else chain

    def factory(learning_rate, b1):
        tx = rule(learning_rate, b1)
        if config.lookahead_every:
            tx = optax.chain(tx, lookahead(config.lookahead_every, config.lookahead_decay, total_steps))
        return tx

    if sgd:  # the hyperparameter's name in the state: "momentum", as in torch's SGD
        return optax.inject_hyperparams(lambda learning_rate, momentum: factory(learning_rate, momentum))(
            learning_rate=learning_rate, momentum=momentum
        )
    return optax.inject_hyperparams(factory)(learning_rate=learning_rate, b1=momentum)
