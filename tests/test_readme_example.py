"""The custom training loop shown in README.md runs and learns."""
import os
import re

from tests.conftest import REPO


def test_readme_training_loop_runs_and_beats_chance(capsys, tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- example-loop -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README.md lost its example loop"
    namespace = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # any folder: the example names an installed config, no path
    try:
        exec(compile(block.group(1), "README.md example", "exec"), namespace)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert out.count("test acc") == namespace["config"].num_epochs
    # 10 synthetic classes: chance is 0.1.
    assert float(namespace["test"]["accuracy"]) > 0.3
