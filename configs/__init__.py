"""The named configs (`--config default`, `--config smoke`, ...), installed with the package
as `cifar_jax.configs` (pyproject.toml maps it to this folder); `cifar-jax train
--list-configs` lists them. Each file defines `get_config()`; nothing here is imported to
use one (cifar_jax.config runs the file)."""
