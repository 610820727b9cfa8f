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
