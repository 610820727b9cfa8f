"""How much device memory a config's train step needs, from shapes alone.

    from cifar_jax.memory import estimate_train_bytes
    estimate = estimate_train_bytes(config)              # the config's batch, image_size, k
    estimate["total"] / 2**30                            # GiB

Nothing is compiled or computed: the model's forward pass is traced abstractly and the
activations it saves for the backward pass (the residuals of `jax.vjp`) are added up, with the
parameters, gradients, optimizer state and inputs. It takes seconds for ResNet152 at 224,
where compiling the step on a CPU takes minutes. It is an estimate of the peak, not a
measurement: XLA fuses elementwise ops (saving fewer activations than traced) and adds
workspace and temporaries of its own. docs/finetuning.md ("Memory") compares it with XLA's
`memory_analysis()` of compiled steps.
"""
from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import optax

from cifar_jax.checkpoint.restoring import abstract_train_state

GIB = 2**30


def _bytes(tree) -> int:
    return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def activation_bytes(model, batch_size: int, image_size: int, *, variables=None, frozen: bool = False) -> int:
    """Bytes of the activations a backward pass needs: the residuals `jax.vjp` keeps from the
    train-mode forward pass of `batch_size` images of image_size x image_size (float32 input),
    found by abstract tracing only. The parameters are not counted (they come back among the
    residuals, but live anyway). `frozen`: the forward and gradients of a frozen backbone
    (inference mode; gradients for the head only, cifar_jax.steps)."""
    from cifar_jax.steps import head_only

    x = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.float32)
    if variables is None:
        small = jnp.zeros((1, 32, 32, 3), jnp.float32)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), small, train=False))

    def residuals(params, batch_stats, images):
        def loss(params):
            variables = {"params": params, "batch_stats": batch_stats}
            if frozen:
                logits = model.apply({**variables, "params": head_only(params)}, images, train=False)
            else:
                logits, _ = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                        rngs={"dropout": jax.random.key(0)})
            labels = jnp.zeros(logits.shape[0], jnp.int32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        _, vjp_fn = jax.vjp(loss, params)
        return vjp_fn  # a pytree (jax.tree_util.Partial) whose leaves are the residuals

    saved = jax.eval_shape(residuals, variables["params"], variables.get("batch_stats", {}), x)
    # The parameters come back among the residuals: each is skipped once.
    unclaimed = collections.Counter((tuple(p.shape), str(p.dtype)) for p in jax.tree.leaves(variables["params"]))
    total = 0
    for leaf in jax.tree.leaves(saved):
        key = (tuple(leaf.shape), str(leaf.dtype))
        if unclaimed[key] > 0:
            unclaimed[key] -= 1
            continue
        total += leaf.size * jnp.dtype(leaf.dtype).itemsize
    return total


def estimate_train_bytes(config, batch_size: int | None = None, image_size: int | None = None,
                         grad_accum_steps: int | None = None) -> dict:
    """Estimated device memory of one training step of `config`, in bytes.

    Args:
      config: a run config (model, num_classes, width, dtype, optimizer keys, freeze_backbone).
      batch_size, image_size, grad_accum_steps: override the config's (`batch_size`,
        `image_size`, `grad_accum_steps`).

    Returns:
      A dict of byte counts: "params", "batch_stats", "optimizer" (its state),
      "gradients" (one set, two with grad_accum_steps > 1: the sum being built),
      "inputs" (the uint8 batch, its float32 copy and one microbatch resized),
      "activations" (what one microbatch's forward pass keeps for the backward pass),
      and "total", their sum; plus "microbatch" (the images per pass) and "image_size".
    """
    batch_size = int(batch_size or config.batch_size)
    image_size = int(image_size or config.image_size)
    k = int(grad_accum_steps or config.grad_accum_steps)
    micro = max(1, batch_size // k)
    # Shapes only; any schedule length that the schedules accept gives the same state shapes.
    state = abstract_train_state(config, steps_per_epoch=1000)
    from cifar_jax.steps import create_model

    params = _bytes(state.params)
    activations = activation_bytes(create_model(config), micro, image_size,
                                   variables={"params": state.params, "batch_stats": state.batch_stats},
                                   frozen=config.freeze_backbone)
    gradients = params * (2 if k > 1 else 1)
    inputs = batch_size * 32 * 32 * 3 * (1 + 4) + micro * image_size * image_size * 3 * 4
    result = {
        "params": params,
        "batch_stats": _bytes(state.batch_stats),
        "optimizer": _bytes(state.opt_state),
        "gradients": gradients,
        "inputs": inputs,
        "activations": activations,
    }
    result["total"] = sum(result.values())
    result.update(microbatch=micro, image_size=image_size)
    return result
