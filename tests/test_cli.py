"""The command lines: --help everywhere, train's key list and did-you-mean, the
`cifar-jax` dispatcher, and train --dry-run."""
import io
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from cifar_jax import cli, workdir_lock
from cifar_jax.config import load_config_file
from cifar_jax.config_help import config_comments, train_help
from cifar_jax.train import main as train_main
from tests.conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.py")
DEFAULT = str(REPO / "configs" / "default.py")


# --help ---------------------------------------------------------------------------------

def _description(help_text: str) -> str:
    """The paragraph after the usage lines of an argparse --help."""
    return " ".join(help_text.split("\n\n")[1].split())


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_prints_its_help_and_exits_0(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cifar-jax {command} ") and len(out.splitlines()) > 3
    assert _description(out).endswith("."), _description(out)  # whole sentences, not cut


@pytest.mark.parametrize("module", ["evaluate", "predict", "report", "zoo", "download"])
def test_the_python_m_modules_print_their_help_and_exit_0(module, capsys):
    import importlib

    main = importlib.import_module(f"cifar_jax.{module}").main
    try:
        code = main(["--help"])
    except SystemExit as done:  # argparse's --help exits; `python -m` gives status 0 either way
        code = done.code or 0
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(f"usage: python -m cifar_jax.{module} ")
    assert _description(out).endswith(".") and "python -m" not in _description(out)


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "--step", "x"], "usage: cifar-jax evaluate [-h]"),
    (["predict", "--workdir", "w"], "usage: cifar-jax predict [-h]"),
    (["models", "--num-classes", "0"], "usage: cifar-jax models [-h]"),
    (["zoo", "--num-classes", "x"], "usage: cifar-jax models [-h]"),
    (["report"], "usage: cifar-jax report [-h]"),
])
def test_usage_errors_name_the_command_as_it_was_called(argv, expected, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err
    assert cli.main(argv, prog="python -m cifar_jax.cli") == 2
    assert expected.replace("cifar-jax", "python -m cifar_jax.cli") in capsys.readouterr().err


def test_train_help_lists_every_key_with_its_default_and_comment(capsys):
    assert train_main(["--help"]) == 0  # no --config, no --workdir needed
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m cifar_jax.train --config NAME|FILE --workdir DIR")
    assert "--dry-run" in out
    lines = out.splitlines()
    for key, value in load_config_file(DEFAULT).items():
        assert any(line.startswith(f"  {key}=") for line in lines), key
    assert "  learning_rate=0.001\n      one-cycle peak (OneCycleLR max_lr)" in out
    assert "  mean=(0.5071, 0.4867, 0.4408)\n      Normalisation applied on the device" in out
    assert "  data_dir=''\n" in out and "  num_classes=100\n  verify_md5=True\n" in out  # no comment: none shown
    # Keys in the file's order, not sorted.
    assert out.index("  dataset=") < out.index("  model=") < out.index("  learning_rate=")


def test_train_help_with_a_config_shows_its_values_and_default_py_comments(capsys):
    assert train_main(["--config", SMOKE, "--help"]) == 0
    out = capsys.readouterr().out
    assert "  width=0.125\n      channel multiplier" in out and "  dataset=synthetic\n" in out


def test_config_comments_from_the_source(tmp_path):
    source = tmp_path / "c.py"
    source.write_text(
        "import ml_collections\n\n\ndef get_config():\n"
        "    config = ml_collections.ConfigDict()\n\n"
        "    # Section.\n"
        "    # Two lines\n    # about a.\n"
        "    config.a = 1\n"
        "    config.b = (1,\n                2)  # b's comment\n"
        "    config.c = 'no comment'\n\n"
        "    # Intro to a section.\n"
        "    config.d = 4  # inline wins over a section intro\n"
        "    config.sub = ml_collections.ConfigDict()\n"
        "    config.sub.e = 5  # nested\n\n"
        "    # Training.\n"
        "    config.f = 6\n"
        "    return config\n")
    assert config_comments(source) == {"a": "Two lines about a.", "b": "b's comment",
                                       "d": "inline wins over a section intro", "sub.e": "nested"}
    assert config_comments(tmp_path / "missing.py") == {}
    (tmp_path / "bad.py").write_text("def (:\n")
    assert config_comments(tmp_path / "bad.py") == {}
    help_text = train_help(str(source))
    assert "  sub.e=5\n      nested" in help_text and "  c=no comment\n" in help_text


def _one_line_error(argv, capsys):
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_a_mistyped_key_gets_did_you_mean(tmp_path, capsys):
    err = _one_line_error(["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--config.learnin_rate=0.1"], capsys)
    assert err == "error: unknown config key 'learnin_rate'; did you mean learning_rate?"
    err = _one_line_error(["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--config.zqxv=1"], capsys)
    assert err == "error: unknown config key 'zqxv'; python -m cifar_jax.train --help lists the keys"
    assert cli.main(["train", "--config", "smoke", "--workdir", str(tmp_path / "w"), "--config.zqxv=1"]) == 2
    assert capsys.readouterr().err == "error: unknown config key 'zqxv'; cifar-jax train --help lists the keys\n"
    assert cli.main(["train", "stray"]) == 2
    assert capsys.readouterr().err.startswith("error: unexpected argument 'stray'; usage: cifar-jax train --config ")
    assert "takes no value" in _one_line_error(["--dry-run=yes"], capsys)
    assert not (tmp_path / "w").exists()


def _suggested_command(err: str, prog: str) -> list[str]:
    """The command an error line suggests (from `prog` to the end of the line), split."""
    assert prog in err, err
    return shlex.split(err[err.index(prog):])


def test_evaluate_without_a_checkpoint_suggests_a_command_that_runs(tmp_path, capsys):
    """A run started but saved no checkpoint: the hint is the whole training command, with
    the run's own config.json, and it runs as printed (checked with --dry-run: nothing is
    trained)."""
    workdir = tmp_path / "my run"  # a space: the command quotes it
    workdir.mkdir()
    (workdir / "config.json").write_text(load_config_file("smoke").to_json(indent=2))
    code = cli.main(["evaluate", "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ")
    argv = _suggested_command(err, "cifar-jax train")
    assert argv == ["cifar-jax", "train", "--config", str(workdir / "config.json"), "--workdir", str(workdir)]
    assert cli.main([*argv[1:], "--dry-run"]) == 0
    assert f"Workdir: {workdir} exists with no checkpoint" in capsys.readouterr().out
    # From Python, the same hint names the module.
    from cifar_jax.checkpoint import restore
    from cifar_jax.errors import CifarJaxError

    with pytest.raises(CifarJaxError, match="python -m cifar_jax.train --config "):
        restore(workdir)


# cifar-jax ------------------------------------------------------------------------------

def test_cifar_jax_help_lists_each_command_on_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "predict", "report", "models", "download"):
        assert sum(line.startswith(f"  {name} ") for line in out.splitlines()) == 1


def test_cifar_jax_without_a_command_or_with_an_unknown_one_exits_2(capsys):
    assert cli.main([]) == 2
    assert capsys.readouterr().err.startswith("usage: cifar-jax COMMAND")
    assert cli.main(["fly"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'fly'; commands: train,") and err.count("\n") == 1
    assert cli.main(["evalute", "--workdir", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown command 'evalute'; did you mean evaluate? ")


def test_zoo_is_another_name_for_models(capsys):
    assert cli.main(["zoo"]) == 0
    listed = capsys.readouterr().out
    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out == listed and "resnet9" in listed
    assert "cifar-jax models --list" in listed


def test_cifar_jax_passes_the_arguments_on(tmp_path, capsys):
    assert cli.main(["models"]) == 0
    assert "resnet9" in capsys.readouterr().out
    assert cli.main(["report", "--workdir", str(tmp_path)]) == 2
    assert "metrics.jsonl is missing" in capsys.readouterr().err
    assert cli.main(["evaluate", "--step", "x"]) == 2  # argparse's usage error, as one line
    assert "invalid int value" in capsys.readouterr().err
    assert cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
    assert "Steps: 8 per epoch" in capsys.readouterr().out


def test_download_and_report_run_without_importing_jax(tmp_path):
    """`cifar-jax download --help`, `cifar-jax report --help` and a whole `cifar-jax report`
    (curves.png drawn from metrics.jsonl) in one fresh interpreter: JAX is never imported."""
    (tmp_path / "metrics.jsonl").write_text(json.dumps(
        {"epoch": 0, "train_loss": 2.0, "test_loss": 2.1, "test_acc": 0.3, "last_lr": 1e-3}) + "\n")
    code = ("import sys; from cifar_jax.cli import main; "
            "codes = [main(['download', '--help']), main(['report', '--help']), "
            f"main(['report', '--workdir', {str(tmp_path)!r}])]; "
            "print('jax imported:', 'jax' in sys.modules, codes)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    assert "usage: cifar-jax download" in result.stdout and "usage: cifar-jax report" in result.stdout
    assert result.stdout.rstrip().endswith("jax imported: False [0, 0, 0]")
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.skipif(shutil.which("cifar-jax") is None, reason="the console script is installed by pip install -e .")
def test_the_installed_console_script():
    result = subprocess.run(["cifar-jax", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "download" in result.stdout


# --dry-run ------------------------------------------------------------------------------

def _dry_run(argv, capsys, code=0):
    assert train_main([*argv, "--dry-run"]) == code
    captured = capsys.readouterr()
    lines = dict(line.split(": ", 1) for line in captured.out.splitlines()
                 if line.split(":")[0] in ("Model", "Data", "Steps", "Devices", "Workdir"))
    return captured.out, lines, captured.err


def test_dry_run_of_a_new_synthetic_run(tmp_path, capsys):
    workdir = tmp_path / "new"
    out, lines, err = _dry_run(["--config", SMOKE, "--workdir", str(workdir), "--config.width=0.5"], capsys)
    assert out.startswith("Dry run: nothing is trained, downloaded or written.\nConfig:\n  dataset=synthetic\n")
    assert "  width=0.5\n" in out and err == ""
    assert lines["Model"].startswith("resnet9 width 0.5, 10 classes:") and "parameters" in lines["Model"]
    assert lines["Data"] == "synthetic, generated in memory: 250 train / 125 test images, 10 classes"
    assert lines["Steps"] == "8 per epoch (batch 32, the last one 26 images, padded and masked), 24 in 3 epochs"
    assert lines["Devices"].startswith("1 cpu device") and "float32 compute" in lines["Devices"]
    assert lines["Workdir"] == f"{workdir} is new: a run creates it and starts at epoch 0"
    assert not workdir.exists()


def test_dry_run_of_cifar100_to_download_downloads_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    _, lines, _ = _dry_run(["--config", DEFAULT, "--workdir", str(tmp_path / "w"), f"--config.data_dir={data}",
                            "--config.data_url=http://127.0.0.1:9/mirror/"], capsys)
    assert lines["Data"] == (f"cifar100 is not in {data}: a run would download "
                             "http://127.0.0.1:9/mirror/cifar-100-python.tar.gz (169 MB) to "
                             f"{data}/cifar-100-python.tar.gz (50,000 train / 10,000 test images)")
    assert lines["Model"].startswith("resnet9 width 1, 100 classes: 7,598,820 parameters, 30.40 MB")
    assert lines["Steps"] == "196 per epoch (batch 256, the last one 80 images, padded and masked), 5,880 in 30 epochs"
    assert not data.exists() and not (tmp_path / "w").exists()


def test_dry_run_finds_the_archive_in_place(tmp_path, capsys):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")  # found by name; a run checks the md5
    _, lines, _ = _dry_run(["--config", DEFAULT, "--workdir", str(tmp_path / "w"), "--config.dataset=cifar10",
                            "--config.num_classes=10", f"--config.data_dir={tmp_path}"], capsys)
    assert lines["Data"] == f"cifar10 from {tmp_path}/cifar-10-python.tar.gz (50,000 train / 10,000 test images)"


@pytest.mark.parametrize("overrides, section, reason", [
    (["--config.download=false", "--config.data_dir={tmp}"], "Data", "download=False"),
    (["--config.num_classes=10"], "Data", "cifar100 has 100 classes but num_classes=10"),
    (["--config.max_param_mb=5"], "Model", "over max_param_mb=5"),
])
def test_dry_run_says_why_a_run_would_be_refused(tmp_path, capsys, overrides, section, reason):
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    _, lines, err = _dry_run(["--config", DEFAULT, "--workdir", str(tmp_path / "w"), *overrides], capsys, code=2)
    assert lines[section].startswith("refused: ") and reason in lines[section]
    assert err.startswith("error: a run would be refused: ") and reason in err and err.count("\n") == 1
    assert "Steps" in lines and "Workdir" in lines  # the rest of the plan is still printed


def test_dry_run_of_an_image_folder_counts_its_images(tmp_path, capsys):
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i}.png").write_bytes(b"not decoded by a dry run")
    _, lines, _ = _dry_run(["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--config.dataset=image_folder",
                            f"--config.data_dir={tmp_path / 'images'}", "--config.num_classes=2",
                            "--config.batch_size=4"], capsys)
    assert lines["Data"] == f"image_folder {tmp_path / 'images'}: 6 train / 4 test images, 2 classes"
    assert lines["Steps"] == "2 per epoch (batch 4, the last one 2 images, padded and masked), 6 in 3 epochs"
    _, lines, _ = _dry_run(["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--config.dataset=image_folder",
                            f"--config.data_dir={tmp_path / 'images'}"], capsys, code=2)
    assert lines["Data"].endswith("2 classes, but num_classes=10; pass --config.num_classes=2")


def _image_archive(path, kind):
    """A .tar.gz or .zip image folder (one extra top folder, as archiving a folder adds) of 3
    classes, 2 train and 1 test image each; the "images" are not images: a dry run only
    reads the member list."""
    import tarfile
    import zipfile

    members = [f"set/{split}/{name}/{i}.png" for split, count in (("train", 2), ("test", 1))
               for name in ("ant", "bee", "cat") for i in range(count)] + ["set/README.txt"]
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for member in members:
                archive.writestr(member, b"not decoded by a dry run")
    else:
        with tarfile.open(path, "w:gz") as archive:
            for member in members:
                info = tarfile.TarInfo(member)
                info.size = 4
                archive.addfile(info, io.BytesIO(b"fake"))
    return path


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_dry_run_of_an_image_folder_archive_counts_and_checks_its_classes(tmp_path, capsys, kind):
    archive = _image_archive(tmp_path / f"images.{kind}", kind)
    argv = ["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--config.dataset=image_folder",
            f"--config.data_dir={archive}", "--config.batch_size=4"]
    _, lines, err = _dry_run([*argv, "--config.num_classes=3"], capsys)
    assert lines["Data"] == f"image_folder archive {archive}: 6 train / 3 test images, 3 classes" and err == ""
    assert lines["Steps"] == "2 per epoch (batch 4, the last one 2 images, padded and masked), 6 in 3 epochs"
    # The smoke config's 10 classes: refused, as the run would be after decoding every image.
    _, lines, err = _dry_run(argv, capsys, code=2)
    assert lines["Data"] == (f"refused: image_folder archive {archive}: 6 train / 3 test images, 3 classes, "
                             "but num_classes=10; pass --config.num_classes=3")
    assert err.startswith("error: a run would be refused: image_folder archive ")
    archive.write_bytes(archive.read_bytes()[:40])  # cut short
    _, lines, _ = _dry_run([*argv, "--config.num_classes=3"], capsys, code=2)
    assert lines["Data"].startswith(f"refused: {archive} is not a readable {kind.split('.')[0]} archive")
    assert not (tmp_path / "w").exists() and sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


def test_dry_run_of_a_workdir_of_another_config_or_locked(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    saved = load_config_file(SMOKE)
    (workdir / "config.json").write_text(saved.to_json())
    _, lines, _ = _dry_run(["--config", SMOKE, "--workdir", str(workdir)], capsys)
    assert lines["Workdir"] == f"{workdir} exists with no checkpoint: a run starts at epoch 0"
    _, lines, _ = _dry_run(["--config", SMOKE, "--workdir", str(workdir), "--config.learning_rate=0.5"],
                           capsys, code=2)
    assert lines["Workdir"].startswith("refused: ") and "different config (learning_rate)" in lines["Workdir"]
    lock = workdir_lock.acquire(workdir)  # this live process holds it
    try:
        _, lines, _ = _dry_run(["--config", SMOKE, "--workdir", str(workdir)], capsys, code=2)
        assert lines["Workdir"].startswith(f"refused: workdir {workdir} is already in use by this process")
    finally:
        workdir_lock.release(lock)
    assert sorted(p.name for p in workdir.iterdir()) == ["config.json"]
    assert json.loads((workdir / "config.json").read_text()) == json.loads(saved.to_json())


def test_the_package_exports_stay_importable_and_augment_stays_the_function():
    import cifar_jax
    import cifar_jax.augment  # noqa: F401  (the submodule of the same name)
    from cifar_jax import ResNet9, augment, create_train_state, load_dataset  # noqa: F401

    assert callable(augment) and augment.__name__ == "augment" and augment is cifar_jax.augment
    assert sorted(cifar_jax.__all__) == sorted(cifar_jax._EXPORTS)


# named configs ---------------------------------------------------------------------------

def test_named_configs_load_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    from cifar_jax import named_configs

    names = named_configs.names()
    assert names[:3] == ["airbench94", "default", "efficientnet_b0"] and "smoke" in names and "transfer/seed_resnet50" in names
    assert "__init__" not in names and not any(name.endswith("/__init__") for name in names)
    for name in names:  # each is the repository's file of that name, and it runs
        assert named_configs.find(name) == REPO / "configs" / f"{name}.py"
        assert load_config_file(name).to_dict() == load_config_file(str(REPO / "configs" / f"{name}.py")).to_dict()
    assert load_config_file("default:resnet18").model == "resnet18"
    assert load_config_file("smoke.py").width == 0.125
    assert load_config_file("transfer/seed_resnet50").pretrained == "ResNet50_Weights.IMAGENET1K_V1"
    # A file that exists wins over the name.
    (tmp_path / "smoke").write_text("import ml_collections\ndef get_config():\n"
                                    "    return ml_collections.ConfigDict({'mine': 1})\n")
    assert load_config_file("smoke").to_dict() == {"mine": 1}


@pytest.mark.parametrize("value, expected", [
    ("configs/default.py", "config configs/default.py is neither a file (in {tmp}) nor a named config; "
                           "did you mean the named config default?"),
    ("transfer/seed_resnet5", "did you mean the named config transfer/seed_resnet50?"),
    ("../configs/smoke", "is neither a file (in {tmp}) nor a named config; pass a .py file with get_config(), "
                         "or a named config: airbench94, default, efficientnet_b0,"),
    ("{tmp}/no-such-file:x", "config {tmp}/no-such-file is neither a file nor a named config"),
    ("~no-such-user-23/c.py", "config ~no-such-user-23/c.py is neither a file (in {tmp}) nor a named config"),
    (":x", "config ':x' names no file; pass a named config such as default, or a .py file with get_config()"),
    ("folder", "config folder is a folder, not a config file; pass one of its files (e.g. folder/mine.py, "
               "a .py file with get_config()) or a named config such as default"),
])
def test_a_config_that_is_neither_file_nor_name_is_one_line_that_helps(tmp_path, monkeypatch, capsys, value, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "mine.py").write_text("")
    (tmp_path / "folder" / "__init__.py").write_text("")
    err = _one_line_error(["--config", value.replace("{tmp}", str(tmp_path)), "--workdir", "w", "--dry-run"], capsys)
    assert expected.replace("{tmp}", str(tmp_path)) in err
    assert not (tmp_path / "w").exists()


def test_list_configs_names_each_with_its_summary(capsys):
    from cifar_jax import named_configs

    assert cli.main(["train", "--list-configs"]) == 0
    out = capsys.readouterr().out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert listed == named_configs.names()
    assert "  smoke\n    A tiny offline run on synthetic data" in out
    assert "  transfer/seed_resnet50\n    The seed report's resnet50 experiment:" in out
    assert cli.main(["train", "--help"]) == 0
    assert "--list-configs" in capsys.readouterr().out


def test_a_runs_config_json_is_a_config(tmp_path, capsys):
    """WORKDIR/config.json as --config: the run's own values, tuples back as tuples."""
    saved = load_config_file("smoke")
    saved.lr_decay_epochs = (3,)
    (tmp_path / "config.json").write_text(saved.to_json(indent=2))
    loaded = load_config_file(str(tmp_path / "config.json"))
    assert loaded.to_dict() == saved.to_dict() and loaded.lr_decay_epochs == (3,)
    err = _one_line_error(["--config", f"{tmp_path / 'config.json'}:x", "--workdir", "w"], capsys)
    assert err.endswith("config.json:x: a saved config.json takes no ':x'")


def test_the_package_list_names_every_package_folder():
    """pyproject.toml lists the packages (configs/ is mapped to cifar_jax.configs, which
    setuptools' find cannot do): a new subpackage must be added there, or a wheel lacks it."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert project["package-dir"] == {"cifar_jax.configs": "configs"}
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "cifar_jax").rglob("__init__.py")}
    on_disk |= {".".join(("cifar_jax", *p.parent.relative_to(REPO).parts))
                for p in (REPO / "configs").rglob("__init__.py")}
    folders = {p for p in (REPO / "configs").rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert all((folder / "__init__.py").is_file() for folder in folders)
    assert sorted(project["packages"]) == sorted(on_disk)


def test_named_configs_without_an_installed_package_fall_back_to_the_checkout(monkeypatch):
    import importlib.util

    from cifar_jax import named_configs

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert named_configs.configs_dir() == REPO / "configs"  # this is a source checkout
    monkeypatch.setattr(named_configs, "configs_dir", lambda: None)  # neither installed nor checked out
    assert named_configs.names() == [] and named_configs.find("default") is None
    with pytest.raises(FileNotFoundError, match="'default' is not installed"):
        named_configs.path("default")
