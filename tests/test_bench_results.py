"""bench/results.py: the JSON result files of the bench scripts (no compiling, no device work)."""
import json

import pytest

from bench.results import RESERVED, slug, write_result

DEVICE = {"kind": "NVIDIA H200", "platform": "gpu", "count": 1}


def test_file_name_and_keys(tmp_path):
    path = write_result("throughput", {"rows": [{"loop": "epoch", "s_per_epoch": 0.5}]}, out_dir=tmp_path,
                        device=DEVICE, command="python bench/throughput.py --json throughput")
    record = json.loads(path.read_text())
    assert path.parent == tmp_path
    assert path.name == f"throughput-{record['date']}-nvidia-h200.json"
    assert set(RESERVED) <= set(record)
    assert record["device"] == DEVICE
    assert record["command"] == "python bench/throughput.py --json throughput"
    assert record["versions"]["jax"] and record["versions"]["flax"]
    assert {"jaxlib", "optax", "orbax-checkpoint", "torch", "torchvision"} <= set(record["versions"])
    assert record["rows"] == [{"loop": "epoch", "s_per_epoch": 0.5}]


def test_never_overwrites(tmp_path):
    first = write_result("zoo", {"rows": [1]}, out_dir=tmp_path, device=DEVICE, command="a")
    second = write_result("zoo", {"rows": [2]}, out_dir=tmp_path, device=DEVICE, command="b")
    assert second.name == first.name.replace(".json", "-2.json")
    assert json.loads(first.read_text())["rows"] == [1]
    assert json.loads(second.read_text())["rows"] == [2]


def test_numpy_values_and_bad_input(tmp_path):
    np = pytest.importorskip("numpy")
    path = write_result("x", {"acc": np.float32(0.5), "n": np.int64(3)}, out_dir=tmp_path, device=DEVICE, command="c")
    record = json.loads(path.read_text())
    assert (record["acc"], record["n"]) == (0.5, 3)
    with pytest.raises(ValueError):
        write_result("x", {"date": 1}, out_dir=tmp_path, device=DEVICE, command="c")
    with pytest.raises(ValueError):
        write_result("../x", {}, out_dir=tmp_path, device=DEVICE, command="c")


def test_slug():
    assert slug("NVIDIA H200") == "nvidia-h200"
    assert slug("cpu") == "cpu"
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
