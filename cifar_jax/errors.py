"""The one exception type users see for mistakes in their input.

Every message is a single line that names the problem and the fix; the command-line
entry points print it without a traceback and exit with status 2.
"""


class CifarJaxError(Exception):
    """A problem with the user's input (config, data, files), not a bug in cifar_jax."""


class ConfigError(CifarJaxError):
    """An unknown config key, a value of the wrong type, or an unusable value."""


class DataError(CifarJaxError):
    """Data that is missing, corrupt, or does not match the config."""


def one_line(error: BaseException, limit: int = 240) -> str:
    """The innermost cause of `error` as `Type: first line`, without TensorStore specs."""
    seen = set()
    while id(error) not in seen and (error.__cause__ or error.__context__) is not None:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    text = text.split(" [tensorstore_spec=")[0].split(" See full TensorStore details")[0]
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
