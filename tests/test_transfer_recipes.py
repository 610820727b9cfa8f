"""Each configs/transfer/ recipe through the CLI: every one resolves, validates and builds
its model (a dry run, shapes only), and one trains at a tiny size."""
import pytest

from cifar_jax import pretrained, torch_hub
from cifar_jax.config import load_config_file
from cifar_jax.train import main
from tests.conftest import REPO

RECIPES = sorted(p.name for p in (REPO / "configs" / "transfer").glob("*.py") if p.name not in ("finetune.py", "__init__.py"))


def _native(recipe: str) -> bool:
    """Whether `recipe` trains at 32x32 (the seed's ImageNet-stem runs, the CIFAR-stem ones)."""
    return recipe.startswith("seed_") or recipe.endswith("_32.py")


def test_every_seed_model_has_a_seed_config_and_a_224_recipe():
    for name in ("vgg16", "resnet50", "resnet152", "mobilenet_v2", "efficientnet_b0"):
        assert f"seed_{name}.py" in RECIPES and f"{name}_224.py" in RECIPES
    assert {"resnet18_32.py", "resnet50_32.py"} <= set(RECIPES)
    for recipe in RECIPES:
        config = load_config_file(str(REPO / "configs" / "transfer" / recipe))
        assert config.image_size == (32 if _native(recipe) else 224), recipe
        # The *_32 recipes: the CIFAR stem (the zoo's model of the weights' architecture).
        arch, stem = pretrained.torchvision_of(config.model)
        assert stem == ("cifar" if recipe.endswith("_32.py") else "imagenet"), recipe
        assert torch_hub.weight_entry(config.pretrained)[0] == arch, recipe


def _tiny_run_argv(recipe: str, workdir, size: int | None = None) -> list[str]:
    size = size or (32 if _native(recipe) else 64)
    return [
        "--config", str(REPO / "configs" / "transfer" / recipe), "--workdir", str(workdir),
        "--config.dataset=synthetic", "--config.num_classes=10", "--config.synthetic_train_size=32",
        "--config.synthetic_test_size=16", "--config.pretrained=", f"--config.image_size={size}",
        "--config.num_epochs=1", "--config.warmup_epochs=0", "--config.batch_size=8",
        "--config.eval_batch_size=16", "--config.xla_cache_dir=",
    ]  # full width: the pretrained weights fix the widths


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_dry_runs_through_the_cli(tmp_path, recipe, capsys):
    """Every recipe resolves, validates and builds its model (shapes only) through the CLI."""
    code = main(_tiny_run_argv(recipe, tmp_path / "run") + ["--dry-run"])
    out = capsys.readouterr()
    assert code == 0, out.err
    model = load_config_file(str(REPO / "configs" / "transfer" / recipe)).model
    assert f"Model: {model} width 1," in out.out and not (tmp_path / "run").exists()


# Training compiles a full-width ImageNet model's step (35-60 s on 2 CPU cores), so the
# slow set trains one recipe, the shared recipe of finetune.py on ResNet18, resized to 64x64
# on the device as a 224 recipe resizes, as a tiny run; the dry runs above cover every
# recipe, and the other ImageNet models' train steps are traced in tests/test_zoo_training.py.
TRAINED = {"resnet18_224.py": 64}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", TRAINED)
def test_recipes_train_through_the_cli_at_a_tiny_size(tmp_path, recipe, capsys):
    workdir = tmp_path / "run"
    code = main(_tiny_run_argv(recipe, workdir, TRAINED[recipe]))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Epoch [0]" in out.out
    assert (workdir / "metrics.jsonl").read_text().count("\n") == 1
