"""`python -m cifar_jax.evaluate --torch-weights FILE` evaluates a PyTorch state_dict in JAX."""
import json

import numpy as np
import pytest

from cifar_jax.config import load_config_file
from cifar_jax.convert import load_torch_weights
from cifar_jax.evaluate import compute_logits, main
from tests.conftest import REPO

torch = pytest.importorskip("torch")


@pytest.fixture
def run_dir(tmp_path):
    config = load_config_file(str(REPO / "configs" / "smoke.py"))
    config.synthetic_test_size = 64
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(config.to_json(indent=2))
    return workdir, config


def test_torch_state_dict_is_evaluated_in_jax(run_dir, tmp_path, capsys):
    from cifar_jax.data import load_dataset
    from cifar_jax.reference import ResNet9

    workdir, config = run_dir
    torch.manual_seed(0)
    model = ResNet9(num_classes=10, width=config.width)
    weights = tmp_path / "weights.pth"
    torch.save(model.state_dict(), weights)
    assert main(["--workdir", str(workdir), "--torch-weights", str(weights), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["param_bytes"] == weights.stat().st_size and result["step"] is None
    assert result["confusion_png"] == str(workdir / "confusion-torch-weights.png")
    # The same numbers as converting the file and running the JAX model on the test split.
    data = load_dataset(config)
    logits = compute_logits(load_torch_weights(weights, 10, config.width), config, data.test_images, 64)
    assert result["top1"] == pytest.approx(np.mean(logits.argmax(1) == data.test_labels))
    assert result["params"] == sum(p.numel() for p in model.parameters())


def test_a_whole_pickled_model_is_refused_with_the_fix(run_dir, tmp_path, capsys):
    from cifar_jax.reference import ResNet9

    workdir, config = run_dir
    whole = tmp_path / "model.pth"
    torch.save(ResNet9(num_classes=10, width=config.width), whole)
    assert main(["--workdir", str(workdir), "--torch-weights", str(whole)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "state_dict()" in err
    assert not list(workdir.glob("confusion*"))


def test_torch_weights_with_a_config_file_and_no_workdir(tmp_path, monkeypatch, capsys):
    """`evaluate --config FILE --torch-weights FILE`: no run folder at all; nothing written."""
    from cifar_jax.data import load_dataset
    from cifar_jax.reference import ResNet9

    config = load_config_file(str(REPO / "configs" / "smoke.py"))
    torch.manual_seed(1)
    weights = tmp_path / "weights.pth"
    torch.save(ResNet9(num_classes=10, width=config.width).state_dict(), weights)
    monkeypatch.chdir(tmp_path)  # where a stray confusion figure would land
    assert main(["--config", str(REPO / "configs" / "smoke.py"), "--torch-weights", str(weights), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] is None and result["workdir"] is None and result["num_test"] == 125
    assert "confusion_png" not in result and sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]
    data = load_dataset(config)
    logits = compute_logits(load_torch_weights(weights, 10, config.width), config, data.test_images,
                            config.eval_batch_size)
    assert result["top1"] == pytest.approx(np.mean(logits.argmax(1) == data.test_labels), abs=1e-9)
    top5 = (np.argsort(-logits, axis=1)[:, :5] == data.test_labels[:, None]).any(axis=1)
    assert result["top5"] == pytest.approx(top5.mean(), abs=1e-9)
    # Without --workdir, --torch-weights needs --config, and --config needs --torch-weights.
    for argv in (["--torch-weights", str(weights)], ["--config", str(REPO / "configs" / "smoke.py")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "--torch-weights FILE with --config FILE" in err
