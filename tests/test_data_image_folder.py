"""image_folder: folders and .tar/.tar.gz/.zip archives of PNG/JPEG files, and the cache."""
import dataclasses
import gzip
import stat
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from cifar_jax.data import image_folder, load_dataset
from cifar_jax.data.image_folder import load_image_folder
from cifar_jax.errors import DataError
from tests import cifar_files


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    cifar_files.block_network(monkeypatch)


def _members(seed=0, **kwargs):
    return cifar_files.image_folder_members(np.random.default_rng(seed), **kwargs)


def _assert_same(a, b):
    for field in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name), err_msg=field.name)


def _assert_expected(data, expected, classes=("cat", "dog", "frog")):
    assert data.class_names == classes
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(data, f"{split}_images"), expected[split][0])
        np.testing.assert_array_equal(getattr(data, f"{split}_labels"), expected[split][1])
        assert getattr(data, f"{split}_images").dtype == np.uint8
        assert getattr(data, f"{split}_labels").dtype == np.int32


def test_folder_and_archives_give_the_same_arrays(tmp_path):
    members, expected = _members()
    junk = {".DS_Store": b"junk", "train/cat/.DS_Store": b"junk", "train/cat/._0000.png": b"junk",
            "README.md": b"not an image", "__MACOSX/train/cat/._0000.png": b"junk"}
    cifar_files.extract_members(tmp_path / "folder", {**members, **junk})
    sources = [
        tmp_path / "folder",
        cifar_files.write_tar(tmp_path / "data.tar", {**members, **junk}, mode="w"),
        cifar_files.write_tar(tmp_path / "data.tar.gz", {**members, **junk}),
        cifar_files.write_zip(tmp_path / "data.zip", {**members, **junk}),
        # Archiving a folder adds one top-level folder; that is allowed.
        cifar_files.write_tar(tmp_path / "nested.tgz", {f"cifar/{k}": v for k, v in members.items()}),
        cifar_files.write_zip(tmp_path / "nested.zip", {f"cifar/{k}": v for k, v in members.items()}),
    ]
    for source in sources:
        _assert_expected(load_image_folder(str(source), str(tmp_path / f"cache-{source.name}")), expected)


def test_jpeg_grayscale_and_other_sizes_become_32x32_rgb(tmp_path):
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    members = {"train/a/big.png": cifar_files.encode_image(big),
               "train/b/gray.png": cifar_files.encode_image(gray),
               "test/a/photo.jpg": cifar_files.encode_image(smooth, "JPEG"),
               "test/b/x.png": cifar_files.encode_image(smooth)}
    cifar_files.extract_members(tmp_path / "src", members)
    data = load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache"))
    resized = np.asarray(Image.fromarray(big).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(data.train_images[0], resized)
    np.testing.assert_array_equal(data.train_images[1], np.repeat(gray[..., None], 3, axis=-1))
    assert np.abs(data.test_images[0].astype(int) - smooth).max() <= 8  # JPEG is lossy, not wrong
    assert data.train_labels.tolist() == [0, 1] and data.class_names == ("a", "b")


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    members, expected = _members()
    cifar_files.extract_members(tmp_path / "src", members)
    first = load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def must_not_decode(data, name):
        raise AssertionError(f"decoded {name} although the cache is valid")

    monkeypatch.setattr(image_folder, "decode_image", must_not_decode)
    second = load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache"))
    _assert_same(first, second)
    _assert_expected(second, expected)


@pytest.mark.parametrize("kind", ["folder", "tar.gz"])
def test_cache_is_invalidated_when_the_source_changes(tmp_path, kind):
    members, expected = _members()
    new_image = np.full((32, 32, 3), 7, np.uint8)

    def write(members):
        if kind == "folder":
            cifar_files.extract_members(tmp_path / "src", members)
            return tmp_path / "src"
        return cifar_files.write_tar(tmp_path / "src.tar.gz", members)

    source = write(members)
    _assert_expected(load_image_folder(str(source), str(tmp_path / "cache")), expected)
    members["test/dog/0001.png"] = cifar_files.encode_image(new_image)
    write(members)
    cifar_files.touch_later(source / "test/dog/0001.png" if kind == "folder" else source)
    changed = load_image_folder(str(source), str(tmp_path / "cache"))
    np.testing.assert_array_equal(changed.test_images[3], new_image)  # cat 0,1 then dog 0,1
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the stale cache was removed


def test_added_file_invalidates_a_folder_cache(tmp_path):
    members, _ = _members()
    cifar_files.extract_members(tmp_path / "src", members)
    assert len(load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache")).train_images) == 9
    cifar_files.extract_members(tmp_path / "src", {"train/cat/extra.png": members["train/cat/0000.png"]})
    assert len(load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache")).train_images) == 10


def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path):
    members, expected = _members()
    cifar_files.extract_members(tmp_path / "src", members)
    load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache"))
    (cache_file,) = (tmp_path / "cache").glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:500])
    _assert_expected(load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache")), expected)
    with np.load(cache_file) as z:  # rewritten whole
        assert z["train_images"].shape == (9, 32, 32, 3)
    assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_default_cache_dir_respects_xdg_cache_home(tmp_path, monkeypatch):
    members, _ = _members()
    cifar_files.extract_members(tmp_path / "src", members)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_image_folder(str(tmp_path / "src"), "")
    assert len(list((tmp_path / "xdg" / "cifar_jax").glob("image_folder-src-*.npz"))) == 1


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    members, expected = _members(per_class=(4, 2))
    source = cifar_files.write_zip(tmp_path / "src.zip", members)
    monkeypatch.setattr(image_folder, "_PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setattr(image_folder, "_MIN_WORKERS", 1)
    monkeypatch.setattr(image_folder, "_usable_cpus", lambda: 1)  # one worker: cheapest real pool
    monkeypatch.setattr(image_folder, "_CHUNK", 5)
    monkeypatch.setattr(image_folder, "decode_image", None)  # only worker processes may decode
    _assert_expected(load_image_folder(str(source), str(tmp_path / "cache")), expected)


def test_missing_path(tmp_path):
    config = cifar_files.make_config(dataset="image_folder", data_dir=str(tmp_path / "nope"),
                                     cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as error:
        load_dataset(config)
    cifar_files.assert_one_line(error, str(tmp_path / "nope"), "does not exist", "--config.data_dir",
                                "train/<class>/<image>")


@pytest.mark.parametrize("files", [{}, {"train/a.png": b"x", "test/b.png": b"x", "notes.txt": b"x"}])
def test_no_class_folders(tmp_path, files):
    (tmp_path / "src").mkdir()
    cifar_files.extract_members(tmp_path / "src", files)
    with pytest.raises(DataError) as error:
        load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, "no class folders", "train/<class>/<image> and test/<class>/<image>")


def test_missing_test_split(tmp_path):
    members, _ = _members()
    cifar_files.write_zip(tmp_path / "src.zip", {k: v for k, v in members.items() if k.startswith("train/")})
    with pytest.raises(DataError) as error:
        load_image_folder(str(tmp_path / "src.zip"), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, "no test/<class>/<image> files")


def test_train_and_test_classes_differ(tmp_path):
    members, _ = _members()
    members = {k: v for k, v in members.items() if not k.startswith("test/frog/")}
    members["test/zebra/0.png"] = members["test/cat/0000.png"]
    cifar_files.write_tar(tmp_path / "src.tar.gz", members)
    with pytest.raises(DataError) as error:
        load_image_folder(str(tmp_path / "src.tar.gz"), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, "only in train: frog", "only in test: zebra", "every class")


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_unreadable_image_is_named(tmp_path, kind):
    members, _ = _members()
    members["train/dog/broken.png"] = members["train/dog/0000.png"][:40]
    if kind == "folder":
        cifar_files.extract_members(tmp_path / "src", members)
        source = tmp_path / "src"
    else:
        source = cifar_files.write_zip(tmp_path / "src.zip", members)
    with pytest.raises(DataError) as error:
        load_image_folder(str(source), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, "cannot read image", "train/dog/broken.png", "delete or replace")
    assert not list((tmp_path / "cache").glob("*.npz"))


def test_unsupported_archive_type(tmp_path):
    (tmp_path / "images.rar").write_bytes(b"Rar!")
    with pytest.raises(DataError) as error:
        load_image_folder(str(tmp_path / "images.rar"), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, "images.rar", ".tar, .tar.gz, .tgz or .zip")


def test_truncated_archive(tmp_path):
    members, _ = _members(per_class=(30, 5))
    archive = cifar_files.write_tar(tmp_path / "src.tar.gz", members)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError) as error:
        load_image_folder(str(archive), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, str(archive), "truncated or corrupt")


def test_num_classes_must_match_the_folder(tmp_path):
    members, _ = _members()
    cifar_files.extract_members(tmp_path / "src", members)
    config = cifar_files.make_config(dataset="image_folder", data_dir=str(tmp_path / "src"),
                                     cache_dir=str(tmp_path / "cache"), num_classes=100)
    with pytest.raises(DataError) as error:
        load_dataset(config)
    cifar_files.assert_one_line(error, "config num_classes=100 but the image_folder data has 3 classes",
                                "--config.num_classes=3")


def test_class_order_is_by_name_whatever_the_archive_order(tmp_path):
    """Labels follow the sorted class names (code point order: capitals first), not the order
    in which an archive lists its members or a file system returns its folders."""
    classes = ("zebra", "Mango", "apple")
    members, expected = _members(classes=classes)
    backwards = dict(reversed(list(members.items())))  # zebra's last image first
    assert list(backwards)[0].startswith("test/zebra/") and list(backwards)[-1].startswith("train/Mango/")
    sources = [cifar_files.write_zip(tmp_path / "backwards.zip", backwards),
               cifar_files.write_tar(tmp_path / "backwards.tar", backwards, mode="w")]
    cifar_files.extract_members(tmp_path / "folder", backwards)
    sources.append(tmp_path / "folder")
    for source in sources:
        data = load_image_folder(str(source), str(tmp_path / f"cache-{source.name}"))
        _assert_expected(data, expected, classes=("Mango", "apple", "zebra"))


# Hostile archives: bounded before anything is read, one line naming the member.

def test_a_member_declaring_more_than_any_image_needs_is_refused_from_its_header(tmp_path):
    """A tar.gz whose member header claims 400 MB (the bytes never follow: nothing is read)."""
    def entry(name, data, size=None):
        info = tarfile.TarInfo(name)
        info.size = len(data) if size is None else size
        return info.tobuf() + data + b"\0" * (-len(data) % 512)

    members, _ = _members()
    raw = b"".join(entry(name, data) for name, data in members.items())
    raw += entry("train/cat/huge.png", b"\x89PNG" * 128, size=400_000_000)
    (tmp_path / "src.tar.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataError) as error:
        load_image_folder(str(tmp_path / "src.tar.gz"), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, "src.tar.gz:train/cat/huge.png is 400 MB", "more than any image needs",
                                f"{image_folder.MAX_IMAGE_BYTES / 1e6:.0f} MB")


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_an_image_file_over_the_limit_is_refused_naming_it(tmp_path, monkeypatch, kind):
    members, _ = _members()
    noise = np.random.default_rng(3).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    members["train/cat/big.png"] = cifar_files.encode_image(noise)  # a real image, ~28 kB
    monkeypatch.setattr(image_folder, "MAX_IMAGE_BYTES", 20_000)  # a small limit, so the test stays small
    if kind == "folder":
        cifar_files.extract_members(tmp_path / "src", members)
        source = tmp_path / "src"
    else:
        source = cifar_files.write_zip(tmp_path / "src.zip", members)
    with pytest.raises(DataError) as error:
        load_image_folder(str(source), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, "train/cat/big.png", "more than any image needs")


def test_an_archive_whose_images_outgrow_the_memory_budget_is_refused(tmp_path, monkeypatch):
    members, _ = _members()  # 15 PNGs of about 3.2 kB
    monkeypatch.setattr(image_folder, "archive_budget_bytes", lambda: 20_000)
    archive = cifar_files.write_tar(tmp_path / "src.tar.gz", members)
    with pytest.raises(DataError) as error:
        load_image_folder(str(archive), str(tmp_path / "cache"))
    cifar_files.assert_one_line(error, str(archive), "add up to more than", "extract it", "--config.data_dir")
    cifar_files.extract_members(tmp_path / "src", members)  # the folder reads one image at a time: fine
    load_image_folder(str(tmp_path / "src"), str(tmp_path / "cache"))


def test_a_link_entry_in_a_zip_is_skipped_like_a_tar_link(tmp_path):
    members, expected = _members()
    archive = cifar_files.write_zip(tmp_path / "src.zip", members)
    with zipfile.ZipFile(archive, "a") as zf:
        link = zipfile.ZipInfo("train/cat/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16  # as `zip --symlinks` stores a link
        zf.writestr(link, "../../../etc/passwd")
    _assert_expected(load_image_folder(str(archive), str(tmp_path / "cache")), expected)


def test_an_unreadable_member_is_named_not_a_buffer(tmp_path):
    members, _ = _members()
    members["train/dog/garbage.png"] = b"not an image at all"
    archive = cifar_files.write_zip(tmp_path / "src.zip", members)
    with pytest.raises(DataError) as error:
        load_image_folder(str(archive), str(tmp_path / "cache"))
    message = cifar_files.assert_one_line(error, "train/dog/garbage.png", "not an image format Pillow reads")
    assert "BytesIO" not in message and " at 0x" not in message
