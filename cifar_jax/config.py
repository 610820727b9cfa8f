"""Config files (ml_collections, `get_config()`), `--config.KEY=VALUE` overrides, checks.

Overrides follow the Flax examples' convention. Each value is parsed by the type of
the value it replaces, and every mistake raises ConfigError with a one-line fix.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import pathlib
import runpy

import ml_collections

from cifar_jax import named_configs
from cifar_jax.errors import ConfigError, one_line
from cifar_jax.invocation import command
from cifar_jax.optim import check_optimizer_config, check_weight_decay_mode
from cifar_jax.pretrained import check_pretrained

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Runs a config file and returns its `get_config()`.

    Args:
      path: a named config of the package (`default`, `smoke`, `transfer/seed_resnet50`;
        `cifar_jax.named_configs.names()` lists them), or a Python file defining
        `get_config()`; either optionally followed by `:ARG`, which is passed as
        `get_config(ARG)` (ml_collections' config_flags convention), e.g. `default:resnet18`.
        A run's saved `config.json` (WORKDIR/config.json) is read as the config it holds.

    Returns:
      The ConfigDict `get_config` returns (not yet validated: see validate_config).
    """
    file, arg = locate_config(path)
    if file.suffix == ".json":
        if arg is not None:
            raise ConfigError(f"config {_shown(path)}: a saved config.json takes no ':{_shown(arg)}'")
        return ml_collections.ConfigDict(load_saved_config(file))
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


def locate_config(path: str) -> tuple[pathlib.Path, str | None]:
    """(file, ARG or None) of a config value: FILE or NAME, optionally with `:ARG`. A file
    that exists wins over a named config of the same spelling."""
    candidates = [(path, None)]
    if ":" in path:
        head, _, arg = path.rpartition(":")
        candidates.append((head, arg))
    for text, arg in candidates:
        file = _expanded(text)
        if file.is_file():
            return file, arg
        named = named_configs.find(text)
        if named is not None:
            return named, arg
    spec = candidates[-1][0]
    if not spec.strip():
        raise ConfigError(f"config {path!r} names no file; pass a named config such as default, or a .py file "
                          "with get_config()")
    if _expanded(spec).is_dir():
        files = sorted(p.name for p in _expanded(spec).glob("*.py") if p.name != "__init__.py")
        example = f"e.g. {pathlib.Path(spec) / files[0]}, " if files else ""
        raise ConfigError(f"config {_shown(spec)} is a folder, not a config file; pass one of its "
                          f"files ({example}a .py file with get_config()) or a named config such as default")
    meant = named_configs.suggestion(spec)
    hint = (f"did you mean the named config {meant}?" if meant else
            "pass a .py file with get_config(), or a named config: " + ", ".join(named_configs.names()[:8])
            + f", ... ({command('train')} --list-configs lists them)")
    where = "" if _expanded(spec).is_absolute() else f" (in {pathlib.Path.cwd()})"
    raise ConfigError(f"config {_shown(spec)} is neither a file{where} nor a named config; {hint}")


def _expanded(text: str) -> pathlib.Path:
    """`text` as a path, with ~ expanded where there is a home to expand it to."""
    try:
        return pathlib.Path(text).expanduser()
    except RuntimeError:  # ~user of no such user: the path as typed
        return pathlib.Path(text)


def load_saved_config(file) -> dict:
    """The values a run saved as `file` (WORKDIR/config.json; lists read back as tuples),
    with the keys added since completed (complete_saved_config)."""
    file = pathlib.Path(file)
    try:
        values = json.loads(file.read_text(), object_pairs_hook=lambda pairs: {k: _tuples(v) for k, v in pairs})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{file} is not readable JSON ({one_line(error)}); restore it from the run")
    if not isinstance(values, dict):
        raise ConfigError(f"{file} does not hold a config object; restore it from the run")
    return complete_saved_config(values)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


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
        raise ConfigError(f"unknown config key {key!r}; {_suggestion(config, key)}")
    with node.unlocked():
        node[parts[-1]] = parse_value(key, text, node[parts[-1]])


def _suggestion(config: ml_collections.ConfigDict, key: str) -> str:
    """`did you mean KEY?` for the closest known keys, else where to find them."""
    known = list(_flat_keys(config))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return f"{command('train')} --help lists the keys"


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = ""):
    """Every key of `config`, nested ones dotted (as --config.KEY names them)."""
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _flat_keys(value, f"{prefix}{name}.")
        else:
            yield prefix + name


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# Upper bounds: far above any sensible run, low enough that a slip (a few zeros too many)
# is refused in one line before anything is allocated, downloaded or written.
SEED_RANGE = (0, 2**32 - 1)  # JAX keys take 32 bits of the seed (x64 off): others repeat a seed in this range
MAX_BATCH_SIZE = 1 << 24  # 16.8 M images: 206 GB as float32 input alone, beyond any one device
MAX_EPOCHS = 100_000
MAX_CLASSES = 1_000_000
MAX_IMAGE_SIZE = 1024  # the model's input side; ImageNet models use 224
MAX_SYNTHETIC_IMAGES = 1 << 22  # 4.2 M images, 12.9 GB of pixels in memory
MAX_WIDTH = 16.0  # parameters grow with the width squared: ResNet9 at 16 has about 2 billion
MAX_DOWNLOAD_TIMEOUT_S = 24 * 3600.0
# key -> (smallest, largest or None): integers.
INT_RANGES = {
    "num_classes": (2, MAX_CLASSES),
    "num_epochs": (1, MAX_EPOCHS),
    "batch_size": (1, MAX_BATCH_SIZE),
    "eval_batch_size": (1, MAX_BATCH_SIZE),
    "grad_accum_steps": (1, None),
    "image_size": (1, MAX_IMAGE_SIZE),
    "seed": SEED_RANGE,
    "synthetic_train_size": (1, MAX_SYNTHETIC_IMAGES),
    "synthetic_test_size": (1, MAX_SYNTHETIC_IMAGES),
    "checkpoint_every_epochs": (1, None),
    "keep_checkpoints": (1, None),
    "progress_updates": (1, None),
    "crop_padding": (0, 16),
    "whiten_bias_epochs": (0, MAX_EPOCHS),
    "lookahead_every": (0, None),
    "tta_level": (0, 2),
}
# Numbers (an int is accepted where a float is expected): each must be finite; the range
# checks below and in cifar_jax.optim say more.
FLOAT_KEYS = (
    "learning_rate", "width", "div_factor", "final_div_factor", "adam_eps", "download_timeout", "weight_decay",
    "grad_clip", "pct_start", "beta1_max", "beta1_min", "beta2", "momentum", "warmup_epochs",
    "warmup_start_factor", "lr_decay_factor", "backbone_lr_mult", "max_param_mb", "label_smoothing",
    "bn_bias_lr_mult", "final_lr_factor", "lookahead_decay", "muon_lr", "muon_momentum",
)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(key: str, value, low: int, high: int | None) -> None:
    if low == 1:
        wanted = "a positive integer" + (f" of at most {high:,}" if high is not None else "")
    elif high is None:
        wanted = f"an integer of at least {low:,}"
    else:
        wanted = f"an integer in {low:,}..{high:,}"
    ok = _is_int(value) and value >= low and (high is None or value <= high)
    _require(ok, f"{key}={value!r} must be {wanted}; set --config.{key}")


def _check_numbers(config) -> None:
    """Every numeric key holds a number of its type, finite, within its range (INT_RANGES)."""
    for key, (low, high) in INT_RANGES.items():
        _check_int(key, config[key], low, high)
    for key in FLOAT_KEYS:
        value = config[key]
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                 f"{key}={value!r} must be a finite number; set --config.{key}")
    for key in ("mean", "std"):
        values = config[key]
        _require(isinstance(values, (tuple, list)) and len(values) == 3,
                 f"{key} needs 3 values (R, G, B), e.g. --config.{key}='(0.5, 0.5, 0.5)'")
        _require(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values),
                 f"{key}={tuple(values)!r} must hold 3 finite numbers; set --config.{key}")


def validate_config(config) -> None:
    """Checks the values a run depends on; raises ConfigError naming key and fix.

    Types and ranges only (no data is read): a batch larger than the data set is refused
    once the data is loaded (check_batch_size), before the run writes anything."""
    _check_numbers(config)
    for key in ("learning_rate", "width", "div_factor", "final_div_factor", "adam_eps"):
        _require(config[key] > 0, f"{key}={config[key]} must be positive; set --config.{key}")
    _require(config.width <= MAX_WIDTH,
             f"width={config.width} must be at most {MAX_WIDTH:g} (parameters grow with its square); set "
             "--config.width")
    _require(0 < config.download_timeout <= MAX_DOWNLOAD_TIMEOUT_S,
             f"download_timeout={config.download_timeout} must be positive seconds, at most a day "
             f"({MAX_DOWNLOAD_TIMEOUT_S:g}); set --config.download_timeout")
    _require(config.max_param_mb >= 0, f"max_param_mb={config.max_param_mb} must be zero (no limit) or positive; "
             "set --config.max_param_mb")
    for key in ("weight_decay", "grad_clip"):
        _require(config[key] >= 0, f"{key}={config[key]} must be zero or positive; set --config.{key}")
    _require(0 < config.pct_start < 1, f"pct_start={config.pct_start} must lie in (0, 1); set --config.pct_start")
    for key in ("beta1_max", "beta1_min", "beta2", "label_smoothing"):
        _require(0 <= config[key] < 1, f"{key}={config[key]} must lie in [0, 1); set --config.{key}")
    _require(isinstance(config.alternating_flip, bool),
             f"alternating_flip={config.alternating_flip!r} must be true or false; set --config.alternating_flip")
    _require(all(s > 0 for s in config.std), "std values must be positive; set --config.std")
    check_weight_decay_mode(config.weight_decay_mode)
    check_optimizer_config(config)  # optimizer, momentum, schedule, warmup, lr decay, backbone keys
    _require(config.dtype in ("float32", "bfloat16"), f"dtype={config.dtype!r} is not supported; use --config.dtype=float32 or bfloat16")
    check_pretrained(config.pretrained, config.model, config.width)  # a model with torchvision's layers, its weights
    check_transfer_config(config)


def check_batch_size(batch_size: int, num_train: int) -> None:
    """ConfigError unless a training batch fits in the `num_train` training images (a larger
    one would be padded with copies that carry no data: memory for nothing)."""
    _require(batch_size <= num_train,
             f"batch_size={batch_size} is more than the {num_train:,} training images; set --config.batch_size "
             f"to at most {num_train}")


def check_transfer_config(config) -> None:
    """ConfigError (one line) for a bad `image_size`, `grad_accum_steps` or `pretrained`."""
    for key in ("image_size", "grad_accum_steps"):
        _check_int(key, config[key], *INT_RANGES[key])
    k = config.grad_accum_steps
    _require(config.batch_size % k == 0,
             f"batch_size={config.batch_size} does not split into grad_accum_steps={k} equal microbatches; "
             f"set --config.batch_size to a multiple of {k} or change --config.grad_accum_steps")
    _require(isinstance(config.pretrained, str),
             "pretrained must be a .pth path or a torchvision weight name (\"\" for none); set --config.pretrained")


# Keys that may change between a run and its resumption: they do not change the training.
RESUMABLE_CHANGES = frozenset({
    "data_dir", "data_url", "download", "download_timeout", "cache_dir", "xla_cache_dir", "progress_updates",
    "eval_batch_size", "max_param_mb", "skip_nonfinite_steps", "checkpoint_every_epochs", "keep_checkpoints",
    "tta_level",  # evaluation only
})
# Keys that may change to train a run longer: a finished run rerun with a larger num_epochs
# trains the epochs it lacks. The schedules are functions of the step over num_epochs, so the
# steps still to train follow the longer schedule from where it is at that step (OneCycleLR's
# learning rate rises again from its final value).
EXTENDING_CHANGES = frozenset({"num_epochs"})


def training_changes(saved: dict, current: dict) -> list[str]:
    """The keys, sorted, whose values differ between two configs (as JSON dicts) in a way
    that changes what is trained; a run may resume only when this is empty (num_epochs
    may change: EXTENDING_CHANGES)."""
    allowed = RESUMABLE_CHANGES | EXTENDING_CHANGES
    return sorted(
        key for key in set(saved) | set(current)
        if key not in allowed and _saved(saved, key) != _saved(current, key)
    )


# Keys added to configs/default.py since the first runs were saved, with the values that
# keep those runs' behaviour: a saved config.json without them is completed with these
# (complete_saved_config), so no module needs a fallback for a missing key.
KEYS_ADDED_SINCE_FIRST_RUNS = {
    "augment": True,
    "model": "resnet9",
    "max_param_mb": 100.0,
    "dtype": "float32",
    "skip_nonfinite_steps": False,
    "progress_updates": 8,
    "xla_cache_dir": "~/.cache/cifar_jax/xla",
    "checkpoint_every_epochs": 1,
    "keep_checkpoints": 3,
    "data_url": "",
    "download_timeout": 60.0,
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
    "pretrained": "",
    "image_size": 32,
    "grad_accum_steps": 1,
    "label_smoothing": 0.0,
    "crop_padding": 4,
    "alternating_flip": False,
    "tta_level": 0,
    "bn_bias_lr_mult": 1.0,
    "frozen_params": "",
    "whiten_bias_epochs": 0,
    "final_lr_factor": 0.07,
    "lookahead_every": 0,
    "lookahead_decay": 0.95,
    "muon_lr": 0.24,
    "muon_momentum": 0.6,
}


def complete_saved_config(values: dict) -> dict:
    """A saved run's config values with every key added since filled in (see above)."""
    return {**KEYS_ADDED_SINCE_FIRST_RUNS, **values}


def _saved(config: dict, key: str):
    """config[key], or the behaviour of runs saved before the key existed, as JSON has it
    (tuples are lists there)."""
    return json.loads(json.dumps(complete_saved_config(config).get(key)))


USAGE = "--config NAME|FILE --workdir DIR [--config.KEY=VALUE ...] [--dry-run]"
FLAGS = ("dry-run", "help", "list-configs")  # options without a value


@dataclasses.dataclass
class CommandLine:
    """The training command line, split but not yet loaded (see `resolve_config`)."""

    config: str = ""
    workdir: str = ""
    overrides: list = dataclasses.field(default_factory=list)  # (KEY, text), in order
    dry_run: bool = False
    help: bool = False
    list_configs: bool = False


def split_command_line(argv: list[str]) -> CommandLine:
    """`--config NAME|FILE --workdir DIR [--config.KEY=VALUE ...] [--dry-run] [-h | --help]
    [--list-configs]`, split into its parts; ConfigError (one line) for anything else."""
    line = CommandLine()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-h":
            arg = "--help"
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {_shown(arg)!r}; usage: {command('train')} {USAGE}")
        name, has_value, value = arg[2:].partition("=")
        if name in FLAGS:
            if has_value:
                raise ConfigError(f"--{name} takes no value")
            setattr(line, name.replace("-", "_"), True)
            continue
        if not has_value:
            if not args:
                raise ConfigError(f"{_shown(arg)} needs a value, e.g. {_shown(arg)}=VALUE")
            value = args.pop(0)
        if name.startswith("config."):
            line.overrides.append((name[len("config."):], value))
        elif name in ("config", "workdir"):
            setattr(line, name, value)
        else:
            raise ConfigError(f"unknown option --{_shown(name)}; use --config NAME|FILE, --workdir DIR and "
                              "--config.KEY=VALUE (--help lists them)")
    return line


def resolve_config(line: CommandLine) -> ml_collections.ConfigDict:
    """The validated config of a command line: its file, then its overrides in order."""
    for name in ("config", "workdir"):
        if not getattr(line, name):
            raise ConfigError(f"--{name} is required; usage: {command('train')} --config default --workdir runs/NAME")
    config = load_config_file(line.config)
    for key, text in line.overrides:
        apply_override(config, key, text)
    validate_config(config)
    return config


def parse_command_line(argv: list[str]) -> tuple[ml_collections.ConfigDict, str]:
    """`--config NAME|FILE --workdir DIR [--config.KEY=VALUE ...]` -> (validated config, workdir)."""
    line = split_command_line(argv)
    return resolve_config(line), line.workdir
