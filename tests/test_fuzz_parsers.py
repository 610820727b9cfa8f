"""The input parsers under fuzzing: random and mutated inputs give a result or one of the
project's own errors (CifarJaxError subclasses), never another exception, a hang, or a
side effect. Examples per test: FUZZ_EXAMPLES (default 200)."""
import os
import pathlib
import pickle
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cifar_jax.config import apply_override, load_config_file, parse_command_line, parse_value, validate_config  # noqa: E402
from cifar_jax.data.cifar_archive import VARIANTS, read_cifar  # noqa: E402
from cifar_jax.data.image_folder import decode_image, load_image_folder  # noqa: E402
from cifar_jax.data.safe_pickle import load_cifar_pickle  # noqa: E402
from cifar_jax.errors import CifarJaxError, ConfigError, DataError  # noqa: E402
from tests import cifar_files  # noqa: E402
from tests.conftest import REPO  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], derandomize=True,
                database=None)  # derandomized: nothing to replay, and no .hypothesis/ in the working directory


@st.composite
def mutated(draw, base: bytes):
    """`base` with a few bytes replaced, a slice deleted or duplicated, and/or cut short."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["set", "delete", "insert", "truncate"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i:]
    return bytes(data)


def _either(base):
    return st.one_of(mutated(base), st.binary(max_size=512))


def _assert_valid_dataset(dataset, num_classes=None):
    """What every reader promises of a Dataset it returns (cifar_jax.data.dataset.Dataset),
    however odd its input was: checked whenever a fuzzed input is accepted."""
    assert dataset.class_names and all(isinstance(n, str) for n in dataset.class_names)
    if num_classes is not None:
        assert dataset.num_classes == num_classes
    for images, labels in ((dataset.train_images, dataset.train_labels), (dataset.test_images, dataset.test_labels)):
        assert isinstance(images, np.ndarray) and images.dtype == np.uint8
        assert images.ndim == 4 and images.shape[1:] == (32, 32, 3)
        assert isinstance(labels, np.ndarray) and labels.dtype == np.int32 and labels.shape == (len(images),)
        assert labels.size == 0 or (labels.min() >= 0 and labels.max() < dataset.num_classes)


_PLAIN = (dict, list, tuple, str, bytes, int, float, bool, type(None), np.ndarray, np.dtype, np.generic)


def _assert_plain(obj, depth=0):
    """Only what a CIFAR pickle may build (dicts, lists, strings, numbers, numpy arrays)."""
    assert isinstance(obj, _PLAIN), type(obj)
    if isinstance(obj, dict):
        for key, value in obj.items():
            _assert_plain(key, depth + 1)
            _assert_plain(value, depth + 1)
    elif isinstance(obj, (list, tuple)) and depth < 50:
        for item in obj:
            _assert_plain(item, depth + 1)
    elif isinstance(obj, np.ndarray):
        assert obj.dtype != object


# ----------------------------------------------------------------------------- restricted unpickler

_RNG = np.random.default_rng(0)
_SPLIT = cifar_files.random_cifar_split(_RNG, 4, 2)
_BATCH = pickle.dumps(cifar_files.cifar_batch(*_SPLIT, b"labels"), protocol=2)


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import builtins

        return builtins.open, (self.path, "w")


class _RunsCommand:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@FUZZ
@given(data=_either(_BATCH))
def test_unpickler_gives_data_or_data_error(data):
    try:
        result = load_cifar_pickle(data, "fuzzed")
    except DataError:
        return
    _assert_plain(result)


@FUZZ
@given(st.data())
def test_unpickler_never_runs_what_a_mutated_malicious_pickle_names(data):
    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "pwned")
        payload = data.draw(st.sampled_from([_CreatesFile, _RunsCommand]))(target)
        protocol = data.draw(st.integers(0, pickle.HIGHEST_PROTOCOL))
        wrapped = data.draw(st.booleans())
        clean = pickle.dumps({b"data": payload} if wrapped else payload, protocol=protocol)
        try:
            result = load_cifar_pickle(data.draw(st.one_of(st.just(clean), mutated(clean))), "fuzzed")
        except DataError:
            result = None
        assert not os.path.exists(target)
        _assert_plain(result)


# ----------------------------------------------------------------------------- CIFAR archive reader

_TRAIN = cifar_files.random_cifar_split(_RNG, 5, 10)
_TEST = cifar_files.random_cifar_split(_RNG, 2, 10)
_MEMBERS = cifar_files.cifar_members("cifar10", _TRAIN, _TEST)


def _tar_bytes(members, mode):
    with tempfile.TemporaryDirectory() as folder:
        return cifar_files.write_tar(pathlib.Path(folder) / "a.tar", members, mode).read_bytes()


_TAR = _tar_bytes(_MEMBERS, "w")
_TGZ = _tar_bytes(_MEMBERS, "w:gz")


def _read_archive_bytes(data, name):
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / name
        path.write_bytes(data)
        try:
            dataset = read_cifar(VARIANTS["cifar10"], path, verify_md5=False)
        except DataError:
            return None
    _assert_valid_dataset(dataset)
    return dataset


def test_the_unmutated_archives_read():
    for dataset in (_read_archive_bytes(_TAR, "cifar-10-python.tar"), _read_archive_bytes(_TGZ, "cifar-10-python.tar.gz")):
        _assert_valid_dataset(dataset, num_classes=10)
        assert len(dataset.train_labels) == 5 and len(dataset.test_labels) == 2
        np.testing.assert_array_equal(dataset.train_images, _TRAIN[0])
        np.testing.assert_array_equal(dataset.train_labels, _TRAIN[1])


@FUZZ
@given(data=_either(_TAR))
def test_archive_reader_on_mutated_tars(data):
    _read_archive_bytes(data, "cifar-10-python.tar")


@FUZZ
@given(data=_either(_TGZ))
def test_archive_reader_on_mutated_tar_gz(data):
    _read_archive_bytes(data, "cifar-10-python.tar.gz")


_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=8), st.text(max_size=8),
              st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                        st.tuples(st.integers(0, 3), st.sampled_from([3072, 1, 0])),
                        st.sampled_from([np.uint8, np.float32, np.int64]))),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.binary(max_size=8), children, max_size=3)),
    max_leaves=8,
)


@FUZZ
@given(st.data())
def test_archive_reader_on_well_formed_pickles_of_the_wrong_things(data):
    """Valid pickles whose contents are not what a CIFAR file holds (labels of the wrong
    type or range, data of the wrong shape, names that are not a list, ...)."""
    members = dict(_MEMBERS)
    name = data.draw(st.sampled_from(sorted(members)))
    original = load_cifar_pickle(members[name], name)
    key = data.draw(st.sampled_from(sorted(original) + [b"labels", b"data", b"label_names"]))
    value = data.draw(_VALUES)
    obj = data.draw(st.sampled_from(["replace", "whole"]))
    replacement = {**original, key: value} if obj == "replace" else value
    members[name] = pickle.dumps(replacement, protocol=2)
    with tempfile.TemporaryDirectory() as folder:
        cifar_files.extract_members(folder, members)
        try:
            dataset = read_cifar(VARIANTS["cifar10"], pathlib.Path(folder) / "cifar-10-batches-py", verify_md5=False)
        except DataError:
            return
    _assert_valid_dataset(dataset)


# ----------------------------------------------------------------------------- image-folder reader

_IMAGES, _ = cifar_files.image_folder_members(np.random.default_rng(1), classes=("a", "b"), per_class=(1, 1))
_PNG = next(iter(_IMAGES.values()))
_JPEG = cifar_files.encode_image(np.zeros((8, 8, 3), np.uint8), "JPEG")


def _archive(members, kind):
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"x.{kind}"
        if kind == "zip":
            cifar_files.write_zip(path, members)
        else:
            cifar_files.write_tar(path, members, "w:gz" if kind == "tar.gz" else "w")
        return path.read_bytes()


_ZIP, _IMG_TAR = _archive(_IMAGES, "zip"), _archive(_IMAGES, "tar")


@FUZZ
@given(data=st.one_of(mutated(_PNG), mutated(_JPEG), st.binary(max_size=256)))
def test_decode_image_gives_an_image_or_data_error(data):
    try:
        image = decode_image(data, "fuzzed.png")
    except DataError:
        return
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8


@FUZZ
@given(kind=st.sampled_from(["zip", "tar"]), data=st.data())
def test_image_folder_reader_on_mutated_archives(kind, data):
    blob = data.draw(_either(_ZIP if kind == "zip" else _IMG_TAR))
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"images.{kind}"
        path.write_bytes(blob)
        try:
            dataset = load_image_folder(str(path), cache_dir=os.path.join(folder, "cache"))
        except DataError:
            return
    _assert_valid_dataset(dataset)
    assert list(dataset.class_names) == sorted(set(dataset.class_names))


_NAMES = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6)
                  .map(lambda s: s.replace("/", "_")), min_size=1, max_size=4)


@FUZZ
@given(paths=st.lists(st.tuples(_NAMES, st.sampled_from([_PNG, b"", b"junk"])), max_size=6),
       extra=st.sampled_from([(), ("train", "a", "x.png"), ("test", "a", "y.png")]))
def test_image_folder_reader_on_odd_layouts(paths, extra):
    members = {"/".join(parts): blob for parts, blob in paths}
    if extra:
        members["/".join(extra)] = _PNG
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "images.zip"
        cifar_files.write_zip(path, members)
        try:
            dataset = load_image_folder(str(path), cache_dir=os.path.join(folder, "cache"))
        except DataError:
            return
    _assert_valid_dataset(dataset)
    # Class names are folder names of the archive, sorted.
    folders = {part for name in members for part in name.split("/")}
    assert set(dataset.class_names) <= folders and list(dataset.class_names) == sorted(dataset.class_names)


# ----------------------------------------------------------------------------- config overrides

_SMOKE = load_config_file(str(REPO / "configs" / "smoke.py"))
_CURRENT = st.sampled_from([True, 3, 0.5, "text", (0.1, 0.2, 0.3), [1.0, 2.0], None, {"a": 1}])
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["1e999", "-1e999", "nan", "inf", "1" + "0" * 400, "(" * 200 + ")" * 200, "True",
                     "(1" + "0" * 400 + ", 1, 1)", "[[]]", "{}", "0x10", "1_000", " 2 ", "(1,)*3",
                     "10**400", "'a'", "b'x'", "(1, 2, 3j)", "9" * 5000]),
)


@FUZZ
@given(current=_CURRENT, text=_TEXT)
def test_parse_value_gives_a_value_of_the_type_or_config_error(current, text):
    try:
        value = parse_value("key", text, current)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert type(value) is type(current)


@FUZZ
@given(key=st.one_of(st.sampled_from(sorted(_SMOKE.keys())), st.text(max_size=12),
                     st.sampled_from(["mean.x", ".", "..", "a.b.c", "std."])),
       text=_TEXT)
def test_apply_override_sets_the_key_or_raises_config_error(key, text):
    config = _SMOKE.copy_and_resolve_references()
    try:
        apply_override(config, key, text)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    # Only that key changed, and it kept its type.
    assert key in _SMOKE.keys(), key
    assert type(config[key]) is type(_SMOKE[key])
    assert {k: v for k, v in config.items() if k != key} == {k: v for k, v in _SMOKE.items() if k != key}


_ARG = st.one_of(
    st.sampled_from(["--config", "--workdir", str(REPO / "configs" / "smoke.py"), "runs/x", "--config.seed=1",
                     "--config.width=abc", "--config.nope=1", "--config.", "--", "-x", "--config=", "--workdir=",
                     f"--config={REPO / 'configs' / 'smoke.py'}", "--config.mean=(1,2)", "--config.augment",
                     "--config.seed=1\n2", "--config\nx", "--config=/no\nfile", "--a\nb", "--x\ty=1"]),
    st.text(max_size=12),
)


@FUZZ
@given(argv=st.lists(_ARG, max_size=8))
def test_parse_command_line_gives_a_config_or_cifar_jax_error(argv):
    try:
        config, workdir = parse_command_line(argv)
    except CifarJaxError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(workdir, str) and workdir and config.num_classes >= 2
    validate_config(config)  # what parse_command_line returns is a config a run accepts
