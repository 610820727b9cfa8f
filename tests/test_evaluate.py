"""python -m cifar_jax.evaluate and python -m cifar_jax.predict on runs saved with
cifar_jax.checkpoint (in-process, plus one subprocess smoke run of each CLI)."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import cifar_jax
from cifar_jax import checkpoint, evaluate, predict
from cifar_jax.data import load_dataset
from cifar_jax.errors import CifarJaxError
from tests.checkpoint_runs import CLASS_NAMES, biggest_file, copy_run, make_run, smoke_config, step_dir, write_config
from tests.conftest import REPO

PARAMS = 119_546  # configs/smoke.py's model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eval") / "run"
    make_run(workdir, [0.3, 0.8, 0.5])  # best: epoch 1 (step 16); latest: step 24
    return workdir


@pytest.fixture
def run_copy(run, tmp_path):
    return copy_run(run, tmp_path / "copy")


def _cli(module, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _error_of(main, argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: ") and captured.out == ""
    return err


def test_top_k_and_confusion_helpers():
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 2.0, 0.0]])
    labels = np.array([0, 1, 2])
    assert evaluate.top_k_correct(logits, labels, 1).tolist() == [True, False, False]
    assert evaluate.top_k_correct(logits, labels, 2).tolist() == [True, False, True]
    matrix = evaluate.confusion_matrix(logits.argmax(1), labels, 4)
    assert matrix.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_evaluate_json_matches_eval_step(run, capsys):
    assert evaluate.main(["--workdir", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "params", "param_bytes", "step", "per_class"} <= set(result)
    assert result["step"] == 24 and result["epoch"] == 2 and result["params"] == PARAMS
    assert PARAMS * 4 <= result["param_bytes"] <= PARAMS * 4 + 100_000  # plus Orbax metadata (29 kB)
    assert 0 <= result["top1"] <= result["top5"] <= 1
    assert list(result["per_class"]) == list(CLASS_NAMES)
    # The same top-1 as the train loop's eval step on the restored state.
    state, config = checkpoint.restore(run)
    data = load_dataset(config)
    expected = cifar_jax.eval_step(state, {"image": data.test_images, "label": data.test_labels})
    assert result["top1"] == pytest.approx(float(expected["accuracy"]), abs=1e-6)
    assert result["loss"] == pytest.approx(float(expected["loss"]), rel=1e-4)
    # Per-class accuracies average (weighted by class counts) to top-1.
    counts = np.bincount(data.test_labels, minlength=10)
    assert np.dot(list(result["per_class"].values()), counts) / counts.sum() == pytest.approx(result["top1"])
    # top-5 and per-class accuracy against numpy on the logits evaluate computes (the same
    # compiled forward and batches, so the same floats: no near-tie can flip an answer).
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = evaluate.compute_logits(variables, config, data.test_images, config.eval_batch_size)
    ranked = np.argsort(-logits, axis=1)
    in_top5 = (ranked[:, :5] == data.test_labels[:, None]).any(axis=1)
    assert 0 < in_top5.mean() < 1  # a test that can tell top-5 from top-1 and from 1.0
    assert in_top5.mean() > result["top1"]
    assert result["top5"] == pytest.approx(in_top5.mean(), abs=1e-9)
    top1 = ranked[:, 0] == data.test_labels
    for i, name in enumerate(CLASS_NAMES):
        assert result["per_class"][name] == pytest.approx(top1[data.test_labels == i].mean(), abs=1e-9), name
    png = run / "confusion-step24.png"
    assert result["confusion_png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(png).size[0] >= 800


def test_evaluate_text_report_step_and_best(run, capsys):
    assert evaluate.main(["--workdir", str(run), "--best", "--batch-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "(step 16, epoch 1)" in out and "119,546 parameters" in out
    assert "top-1 accuracy:" in out and "top-5 accuracy:" in out and "class_09" in out
    assert out.rstrip().splitlines()[-2] == ("Confusion matrix, per-class accuracy and most confused pairs: "
                                             f"{run / 'confusion-step16.png'}")
    best_png = (run / "confusion-step16.png").read_bytes()
    assert evaluate.main(["--workdir", str(run), "--step", "24", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 24
    # One figure per step: evaluating another step leaves this one as it was.
    assert (run / "confusion-step16.png").read_bytes() == best_png and (run / "confusion-step24.png").is_file()


def test_evaluate_a_workdir_without_checkpoints(tmp_path, capsys):
    write_config(tmp_path, smoke_config())
    err = _error_of(evaluate.main, ["--workdir", str(tmp_path)], capsys)
    assert "no checkpoints in" in err and "cifar_jax.train" in err
    assert not list(tmp_path.glob("confusion*"))
    assert "does not exist" in _error_of(evaluate.main, ["--workdir", str(tmp_path / "nope")], capsys)


def test_evaluate_a_step_that_does_not_exist(run_copy, capsys):
    before = sorted(p.name for p in run_copy.iterdir())
    err = _error_of(evaluate.main, ["--workdir", str(run_copy), "--step", "9"], capsys)
    assert "no checkpoint at step 9" in err and "available steps: 8, 16, 24" in err
    assert sorted(p.name for p in run_copy.iterdir()) == before  # nothing written


def test_evaluate_refuses_a_damaged_step(run_copy, capsys):
    (run_copy / "confusion-step24.png").write_bytes(b"old")
    os.truncate(biggest_file(step_dir(run_copy, 24) / "params"), 1000)
    err = _error_of(evaluate.main, ["--workdir", str(run_copy)], capsys)
    assert "checkpoint step 24" in err and "is damaged" in err and "--step with another one (8, 16)" in err
    assert (run_copy / "confusion-step24.png").read_bytes() == b"old"
    shutil.rmtree(step_dir(run_copy, 16) / "meta")
    err = _error_of(evaluate.main, ["--workdir", str(run_copy), "--step", "16"], capsys)
    assert "checkpoint step 16" in err and "meta" in err


def test_evaluate_shapes_that_do_not_match_the_config(run_copy, capsys):
    write_config(run_copy, smoke_config(num_classes=4))
    err = _error_of(evaluate.main, ["--workdir", str(run_copy)], capsys)
    assert "params/classifier/" in err and "in the checkpoint but" in err
    assert ("(10,)" in err and "(4,)" in err) or ("(64, 10)" in err and "(64, 4)" in err)


@pytest.mark.parametrize("argv, expected", [
    (["--step", "8", "--best"], "not allowed with argument"),
    (["--batch-size", "0"], "--batch-size 0 must be a positive integer"),
    ([], "pass --workdir DIR"),
])
def test_evaluate_bad_arguments(run, capsys, argv, expected):
    argv = ["--workdir", str(run), *argv] if argv else argv
    assert expected in _error_of(evaluate.main, argv, capsys)


def test_evaluate_cli_smoke(run):
    result = _cli("cifar_jax.evaluate", "--workdir", str(run), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["step"] == 24


# ---------------------------------------------------------------------------- predict


def test_evaluate_cli_on_a_truncated_checkpoint_prints_one_line(run_copy):
    """A damaged checkpoint is one line on stderr and exit 2, in a fresh process as a user
    runs it: Orbax's abandoned reads (cifar_jax.checkpoint.layout.quiet_abandoned_io) used
    to print "Event loop is closed" tracebacks after that line."""
    os.truncate(biggest_file(step_dir(run_copy, 24) / "params"), 1000)  # cut short, as a crash leaves it
    result = _cli("cifar_jax.evaluate", "--workdir", str(run_copy))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: checkpoint step 24 "), result.stderr
    assert "is damaged" in result.stderr


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = {
        "big.png": Image.fromarray(rng.integers(0, 256, (120, 90, 4), np.uint8), "RGBA"),
        "gray.jpg": Image.fromarray(rng.integers(0, 256, (10, 14), np.uint8), "L"),
        "cifar.png": Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8), "RGB"),
    }
    for name, image in paths.items():
        image.save(tmp_path / name)
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    return {name: str(tmp_path / name) for name in [*paths, "notes.png"]}


def test_predict_top5_for_images_of_any_size(run, images, capsys):
    files = [images["big.png"], images["gray.jpg"], images["cifar.png"]]
    assert predict.main(["--workdir", str(run), *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Checkpoint:") and "(step 24, epoch 2)" in out[0]
    assert out[1] == f"{files[0]} (90x120 RGBA, resized to 32x32 RGB):"
    assert out[7] == f"{files[1]} (14x10 L, resized to 32x32 RGB):"
    probabilities = [float(line.split()[-1].rstrip("%")) for line in out[2:7]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 100.01
    assert all(line.split()[0] in CLASS_NAMES for line in out[2:7])
    info, results = predict.predict(run, files, best=True)
    assert info["step"] == 16 and [len(top) for _, top in results] == [5, 5, 5]
    assert sum(p for _, p in results[0][1]) <= 1 + 1e-6


def test_predict_matches_the_model_on_a_cifar_sized_image(run, images):
    _, results = predict.predict(run, [images["cifar.png"]], k=10)
    variables, config = checkpoint.restore(run, variables_only=True)
    image = np.asarray(Image.open(images["cifar.png"]))[None]
    logits = cifar_jax.create_model(config).apply(
        variables, cifar_jax.normalize(image, config.mean, config.std), train=False)
    expected = np.asarray(jax.nn.softmax(logits))[0]
    got = dict(results[0][1])
    for i, name in enumerate(CLASS_NAMES):
        assert got[name] == pytest.approx(float(expected[i]), abs=1e-5)


def test_predict_cli_step_and_best(run, images, capsys):
    """--step N and --best pick the checkpoint (the run's best test accuracy is epoch 1's)."""
    probabilities = {}
    for flags, header in ((["--step", "8"], "(step 8, epoch 0)"), (["--best"], "(step 16, epoch 1)"),
                          ([], "(step 24, epoch 2)")):
        assert predict.main(["--workdir", str(run), *flags, images["cifar.png"]]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("Checkpoint:") and header in out[0], out[0]
        probabilities[header] = [line.split()[-1] for line in out[2:7]]
    # Different weights, different answers (the run's steps hold different params).
    assert len({tuple(p) for p in probabilities.values()}) == 3
    err = _error_of(predict.main, ["--workdir", str(run), "--step", "9", images["cifar.png"]], capsys)
    assert "no checkpoint at step 9" in err and "8, 16, 24" in err
    assert "not allowed with argument" in _error_of(
        predict.main, ["--workdir", str(run), "--step", "8", "--best", images["cifar.png"]], capsys)


def test_predict_a_file_that_is_not_an_image(run, images, capsys):
    err = _error_of(predict.main, ["--workdir", str(run), images["cifar.png"], images["notes.png"]], capsys)
    assert images["notes.png"] in err and "is not an image" in err
    err = _error_of(predict.main, ["--workdir", str(run), images["cifar.png"] + ".missing"], capsys)
    assert "does not exist" in err


def test_predict_cli_smoke(run, images):
    result = _cli("cifar_jax.predict", "--workdir", str(run), images["gray.jpg"])
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 7
    bad = _cli("cifar_jax.predict", "--workdir", str(run), images["notes.png"])
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_evaluate_tta_is_the_mean_of_the_image_and_its_mirror(run, capsys):
    """--tta works for any model (here the smoke ResNet9, saved with tta_level 0): level 1's
    logits are the mean of the plain logits of the images and of their mirror images."""
    variables, config = checkpoint.restore(run, variables_only=True)
    images = load_dataset(config).test_images[:8]
    plain = evaluate.compute_logits(variables, config, images, batch_size=8)
    mirrored = evaluate.compute_logits(variables, config, images[:, :, ::-1].copy(), batch_size=8)
    tta = evaluate.compute_logits(variables, config, images, batch_size=8, tta_level=1)
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, rtol=1e-5, atol=1e-5)
    assert evaluate.main(["--workdir", str(run), "--json", "--tta", "1", "--batch-size", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["tta_level"] == 1
    # A level that does not exist: one line, from the command (argparse, exit 2) and the function.
    assert evaluate.main(["--workdir", str(run), "--tta", "3"]) == 2
    refused = capsys.readouterr().err.strip().splitlines()
    assert len(refused) == 1 and "--tta" in refused[0], refused
    with pytest.raises(CifarJaxError, match=r"^tta level 5: use 0 \(none\), 1 \(mirror\) or 2"):
        evaluate.compute_logits(variables, config, images, batch_size=8, tta_level=5)
