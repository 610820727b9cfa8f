"""Config files (ml_collections, `get_config()`), `--config.KEY=VALUE` overrides, checks.

Overrides follow the Flax examples' convention. Each value is parsed by the type of
the value it replaces, and every mistake raises ConfigError with a one-line fix.
"""
from __future__ import annotations

import ast
import json
import pathlib
import runpy

import ml_collections

from cifar_jax.errors import ConfigError
from cifar_jax.optim import ADDED_KEY_DEFAULTS, check_optimizer_config, check_weight_decay_mode

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Runs a config file and returns its `get_config()`.

    Args:
      path: a Python file defining `get_config()`, optionally followed by `:ARG`, which is
        passed as `get_config(ARG)` (ml_collections' config_flags convention), e.g.
        `configs/default.py:resnet18`.

    Returns:
      The ConfigDict `get_config` returns (not yet validated: see validate_config).
    """
    file, arg = pathlib.Path(path), None
    if not file.is_file() and ":" in path:
        head, _, arg = path.rpartition(":")
        file = pathlib.Path(head)
    if not file.is_file():
        raise ConfigError(f"config file {_shown(path)} does not exist; pass e.g. --config configs/default.py")
    try:
        namespace = runpy.run_path(str(file))
    except Exception as error:  # the file is the user's code: report, don't crash
        raise ConfigError(f"config file {file} failed to run: {type(error).__name__}: {error}")
    if "get_config" not in namespace:
        raise ConfigError(f"config file {file} has no get_config(); define one returning a ConfigDict")
    call = "get_config()" if arg is None else f"get_config({arg!r})"
    try:
        config = namespace["get_config"]() if arg is None else namespace["get_config"](arg)
    except Exception as error:
        raise ConfigError(f"{call} in {file} failed: {type(error).__name__}: {error}")
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{call} in {file} must return an ml_collections.ConfigDict")
    return config


def parse_value(key: str, text: str, current):
    """`text` as a value of the type of `current` (bool, int, float, str, tuple/list)."""
    where = f"--config.{key}={_shown(text)}"
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ConfigError(f"{where}: expected true or false")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None  # reported below as the wrong type
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer such as {current}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number such as {current}")
        return _float(value, where, current)
    if isinstance(current, tuple) and all(type(c) is int for c in current):
        # A tuple of integers (lr_decay_epochs) takes any number of them: (30, 60), 50 or ().
        value = (value,) if type(value) is int else value
        if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
            raise ConfigError(f"{where}: expected integers in parentheses, e.g. {tuple(current)}")
        return tuple(value)
    if isinstance(current, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(current):
            raise ConfigError(f"{where}: expected {len(current)} comma-separated values in parentheses, e.g. {tuple(current)}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where}: expected numbers, e.g. {tuple(current)}")
        return type(current)(_float(v, where, tuple(current)) for v in value)
    raise ConfigError(f"{where}: config key {key} holds a {type(current).__name__}, which cannot be overridden")


def _shown(text: str) -> str:
    """`text` as typed, or its repr if it holds newlines or other unprintable characters
    (messages stay one line)."""
    return text if text.isprintable() else repr(text)


def _float(value, where: str, example) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range, e.g. 1 followed by 400 zeros
        raise ConfigError(f"{where}: the number is too large; expected a number such as {example}") from None


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets config[key] from command-line text; `key` may be dotted for nested configs."""
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
        known = ", ".join(sorted(config.keys()))
        raise ConfigError(f"unknown config key {key!r}; known keys: {known}")
    with node.unlocked():
        node[parts[-1]] = parse_value(key, text, node[parts[-1]])


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate_config(config) -> None:
    """Checks the values a run depends on; raises ConfigError naming key and fix."""
    positive_ints = ("num_classes", "num_epochs", "batch_size", "eval_batch_size")
    for key in positive_ints:
        value = config[key]
        _require(isinstance(value, int) and value >= 1, f"{key}={value!r} must be a positive integer; set --config.{key}")
    _require(config.num_classes >= 2, f"num_classes={config.num_classes} must be at least 2; set --config.num_classes")
    for key in ("learning_rate", "width", "div_factor", "final_div_factor", "adam_eps"):
        _require(config[key] > 0, f"{key}={config[key]} must be positive; set --config.{key}")
    _require(config.download_timeout > 0,
             f"download_timeout={config.download_timeout} must be positive seconds; set --config.download_timeout")
    for key in ("weight_decay", "grad_clip"):
        _require(config[key] >= 0, f"{key}={config[key]} must be zero or positive; set --config.{key}")
    _require(0 < config.pct_start < 1, f"pct_start={config.pct_start} must lie in (0, 1); set --config.pct_start")
    for key in ("beta1_max", "beta1_min", "beta2"):
        _require(0 <= config[key] < 1, f"{key}={config[key]} must lie in [0, 1); set --config.{key}")
    for key in ("mean", "std"):
        _require(len(config[key]) == 3, f"{key} needs 3 values (R, G, B), e.g. --config.{key}='(0.5, 0.5, 0.5)'")
    _require(all(s > 0 for s in config.std), "std values must be positive; set --config.std")
    check_weight_decay_mode(config.weight_decay_mode)
    check_optimizer_config(config)  # optimizer, momentum, schedule, warmup, lr decay, backbone keys
    _require(config.dtype in ("float32", "bfloat16"), f"dtype={config.dtype!r} is not supported; use --config.dtype=float32 or bfloat16")
    check_transfer_config(config)


# Keys added for pretrained models (docs/finetuning.md), with the values that keep a config
# without them (an older run's config.json) training as it did.
TRANSFER_KEY_DEFAULTS = {"pretrained": "", "image_size": 32, "grad_accum_steps": 1}


def check_transfer_config(config) -> None:
    """ConfigError (one line) for a bad `image_size`, `grad_accum_steps` or `pretrained`."""
    get = lambda key: config.get(key, TRANSFER_KEY_DEFAULTS[key])  # noqa: E731
    for key in ("image_size", "grad_accum_steps"):
        value = get(key)
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 f"{key}={value!r} must be a positive integer; set --config.{key}")
    k = get("grad_accum_steps")
    _require(config.batch_size % k == 0,
             f"batch_size={config.batch_size} does not split into grad_accum_steps={k} equal microbatches; "
             f"set --config.batch_size to a multiple of {k} or change --config.grad_accum_steps")
    _require(isinstance(get("pretrained"), str),
             "pretrained must be a .pth path or a torchvision weight name (\"\" for none); set --config.pretrained")


# Keys that may change between a run and its resumption: they do not change the training.
RESUMABLE_CHANGES = frozenset({
    "data_dir", "data_url", "download", "download_timeout", "cache_dir", "xla_cache_dir", "progress_updates",
    "eval_batch_size", "max_param_mb", "skip_nonfinite_steps", "checkpoint_every_epochs", "keep_checkpoints",
})


def training_changes(saved: dict, current: dict) -> list[str]:
    """The keys, sorted, whose values differ between two configs (as JSON dicts) in a way
    that changes what is trained; a run may resume only when this is empty."""
    return sorted(
        key for key in set(saved) | set(current)
        if key not in RESUMABLE_CHANGES and _saved(saved, key) != _saved(current, key)
    )


def _saved(config: dict, key: str):
    """config[key]; a key added since the run was saved counts as its old behaviour."""
    defaults = {**ADDED_KEY_DEFAULTS, **TRANSFER_KEY_DEFAULTS}
    return config.get(key, json.loads(json.dumps(defaults.get(key))))


def parse_command_line(argv: list[str]) -> tuple[ml_collections.ConfigDict, str]:
    """`--config FILE --workdir DIR [--config.KEY=VALUE ...]` -> (validated config, workdir)."""
    options: dict[str, str] = {}
    overrides: list[tuple[str, str]] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; usage: --config FILE --workdir DIR [--config.KEY=VALUE ...]")
        name, has_value, value = arg[2:].partition("=")
        if not has_value:
            if not args:
                raise ConfigError(f"{_shown(arg)} needs a value, e.g. {_shown(arg)}=VALUE")
            value = args.pop(0)
        if name.startswith("config."):
            overrides.append((name[len("config."):], value))
        elif name in ("config", "workdir"):
            options[name] = value
        else:
            raise ConfigError(f"unknown option --{_shown(name)}; use --config FILE, --workdir DIR and --config.KEY=VALUE")
    for name in ("config", "workdir"):
        if not options.get(name):
            raise ConfigError(f"--{name} is required; usage: --config configs/default.py --workdir runs/NAME")
    config = load_config_file(options["config"])
    for key, text in overrides:
        apply_override(config, key, text)
    validate_config(config)
    return config, options["workdir"]
