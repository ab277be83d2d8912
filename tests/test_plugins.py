"""Plugins: a third-party package adds an encoder, an attribution method, a metric and a task through Python entry
points (no fork, no edit of aft-bench), and ``aft-bench ls``, ``run`` and ``compare`` use them like built-ins.

The plugin is a real distribution on a path: a package and its ``.dist-info`` (``METADATA`` and
``entry_points.txt``, what ``pip install`` writes), put on ``PYTHONPATH`` of a fresh ``aft-bench`` process. Its task
is the README's "Adding a task" walk-through, taken from the README itself (so the walk-through stays true).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aft_bench.apps.cli import main
from aft_bench.core import registries
from aft_bench.core.registry import Registry

REGISTRIES = [value for value in vars(registries).values() if isinstance(value, Registry)]

PLUGIN = "aftb_demo_plugin"
ENTRY_POINTS = f"""\
[aft_bench.encoders]
demo-tiny = {PLUGIN}.encoders:tiny
demo-tiny-b = {PLUGIN}.encoders:tiny_b

[aft_bench.attributions]
demo_centre = {PLUGIN}.methods:CentreWeighted
demo_broken = {PLUGIN}.broken:Broken

[aft_bench.metrics]
top_mass = {PLUGIN}.top_mass:TOP_MASS

[aft_bench.tasks]
top_mass = {PLUGIN}:top_mass.yaml

[aft_bench.attributions]
gradcam = {PLUGIN}.methods:CentreWeighted
"""
FILES = {
    "__init__.py": '"""A demo aft-bench plugin: an encoder, a method, a metric and a task."""\n',
    "encoders.py": '''"""Two tiny random open_clip ViTs (no download)."""

from __future__ import annotations

import torch

from aft_bench.models.backends.open_clip import OpenClipEncoder
from aft_bench.models.backends.open_clip_models import build_model, tokenizer_for

CFG = {"embed_dim": 16,
       "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8, "mlp_ratio": 2.0},
       "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def _tiny(seed: int, name: str, device: str | torch.device) -> OpenClipEncoder:
    torch.manual_seed(seed)
    return OpenClipEncoder(build_model(CFG), tokenizer_for(CFG), name=name, card={"model_cfg": CFG}).to(device)


def tiny(device: str | torch.device = "cpu") -> OpenClipEncoder:
    """A tiny random ViT of the demo plugin (seed 0)."""
    return _tiny(0, "demo-tiny", device)


def tiny_b(device: str | torch.device = "cpu") -> OpenClipEncoder:
    """Another tiny random ViT of the demo plugin (seed 1)."""
    return _tiny(1, "demo-tiny-b", device)
''',
    "methods.py": '''"""A method that weights the simple gradient by closeness to the image centre."""

from __future__ import annotations

import os

import torch

from aft_bench.attributions.simple_gradient import SimpleGradient

if os.environ.get("AFTB_DEMO_MARK"):  # the tests check that listing names imports no plugin module
    with open(os.environ["AFTB_DEMO_MARK"], "a", encoding="utf-8") as mark:
        mark.write("methods imported\\n")


class CentreWeighted(SimpleGradient):
    """The simple gradient times a centred Gaussian window (a demo of a plugin method)."""

    name = "demo_centre"

    def attribute(self, encoder, images, target):
        maps = super().attribute(encoder, images, target)
        h, w = maps.shape[-2:]
        ys = torch.linspace(-1, 1, h, device=maps.device)[:, None]
        xs = torch.linspace(-1, 1, w, device=maps.device)[None, :]
        return maps * torch.exp(-(xs**2 + ys**2))
''',
    "broken.py": 'raise RuntimeError("this demo module is broken")\n',
}
SUITE = """\
version: 1
suite: {name: demo, description: the demo plugin's task}
defaults: {limit: 6, dataset_args: {size: 12}}
tasks:
  - task: top_mass
    attributions: [demo_centre, simple_gradient]
    headline: [top_mass]
"""


README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough(name: str) -> str:
    """The code block of the README's walk-through that follows ``<!-- walkthrough:NAME -->``."""
    match = re.search(rf"<!-- walkthrough:{re.escape(name)} -->\n```\w*\n(.*?)```", README.read_text(encoding="utf-8"),
                      re.S)
    assert match, f"README.md has no walk-through block {name}"
    return match.group(1)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    package = root / PLUGIN
    package.mkdir()
    task_yaml = walkthrough("tasks/top_mass.yaml").replace("aft_bench.tasks.top_mass:", f"{PLUGIN}.top_mass:")
    files = {**FILES, "top_mass.py": walkthrough("tasks/top_mass.py"), "top_mass.yaml": task_yaml}
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")
    info = root / "aftb_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aftb-demo-plugin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    return root


LS = """
import json, sys
from aft_bench.apps.cli import main
print(json.dumps(main(["ls", "attributions"])))
"""


class _Lines(logging.Handler):
    """Keeps the log lines of a block (what the command line prints to stderr)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def commands(plugin_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The commands of the tests below through ``aft_bench.apps.cli.main``, with the plugin installed on
    ``sys.path`` and every registry reloaded (then the plugin removed and the registries reloaded again): each one's
    exit code, stdout and stderr (log lines included). ``ls`` also runs in a fresh process that marks any import of
    the plugin's method module."""
    out = tmp_path_factory.mktemp("plugin_runs")
    suite = out / "demo.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    mark = out / "imported.txt"
    path = os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))
    fresh = subprocess.run([sys.executable, "-c", LS], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": path, "AFTB_DEMO_MARK": str(mark)})
    named = {
        "ls attributions": ["ls", "attributions"],  # first: the registry loads here and warns of the clash
        "ls tasks": ["ls", "tasks"],
        "ls metrics": ["ls", "metrics"],
        "run": ["run", "--task", "top_mass", "--encoders", "demo-tiny", "--attributions", "demo_centre",
                "simple_gradient", "--limit", "4", "--dataset-arg", "size=8", "--out", str(out / "run")],
        "compare": ["compare", "--suite", str(suite), "--encoders", "demo-tiny", "demo-tiny-b", "--resamples", "200",
                    "--out", str(out / "compare")],
        "broken": ["run", "--task", "top_mass", "--encoders", "demo-tiny", "--attributions", "demo_broken",
                   "--limit", "2", "--out", str(out / "broken")],
    }
    runs: dict[str, dict] = {"folder": {"path": out},
                             "ls alone": {"code": fresh.returncode, "stdout": fresh.stdout,
                                          "imported the plugin": mark.exists()}}
    sys.path.insert(0, str(plugin_path))
    importlib.invalidate_caches()
    lines = _Lines()
    logging.getLogger().addHandler(lines)
    try:
        for registry in REGISTRIES:
            registry.reload()
        for name, args in named.items():
            stdout, stderr = io.StringIO(), io.StringIO()
            start = len(lines.lines)
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = main(args)
            runs[name] = {"code": code, "stdout": stdout.getvalue(),
                          "stderr": "\n".join(lines.lines[start:]) + "\n" + stderr.getvalue()}
    finally:
        logging.getLogger().removeHandler(lines)
        sys.path.remove(str(plugin_path))
        for module in [m for m in sys.modules if m == PLUGIN or m.startswith(PLUGIN + ".")]:
            del sys.modules[module]
        importlib.invalidate_caches()
        for registry in REGISTRIES:
            registry.reload()
    return runs


def test_ls_lists_the_plugins_entries_without_importing_them(commands: dict[str, dict]) -> None:
    alone = commands["ls alone"]
    assert alone["code"] == 0 and "demo_centre" in alone["stdout"] and "Gaussian window" in alone["stdout"]
    assert not alone["imported the plugin"]  # the help line is the docstring, read from the source
    out = commands["ls attributions"]
    assert out["code"] == 0 and "simple gradient times a centred Gaussian window" in out["stdout"]
    tasks = commands["ls tasks"]["stdout"]
    assert "top_mass" in tasks and "share of each map's mass in its top tenth of pixels" in tasks
    metrics = commands["ls metrics"]["stdout"]
    assert "top_mass" in metrics and "share of the map's mass in its top tenth of pixels" in metrics
    # an entry point that repeats a built-in name is left out, naming the distribution
    assert "gradcam" in out["stdout"] and "aftb-demo-plugin 0.1" in out["stderr"] and "left out" in out["stderr"]


def test_a_plugin_task_method_encoder_and_metric_run_through_the_cli(commands: dict[str, dict]) -> None:
    assert commands["run"]["code"] == 0, commands["run"]["stderr"]
    folder = commands["folder"]["path"] / "run" / "top_mass"
    results = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert sorted(r["attribution"] for r in results) == ["demo_centre", "simple_gradient"]
    for result in results:
        assert result["encoder"] == "demo-tiny" and result["n"] == 4 and result["task_version"] == 1
        assert 0.1 <= result["metrics"]["top_mass"]["mean"] / 100 <= 1.0
        assert result["metrics"]["top_mass"]["higher_is_better"] is True
    assert "| top_mass ↑ |" in (folder / "leaderboard.md").read_text()


def test_compare_runs_a_suite_of_the_plugins_task(commands: dict[str, dict]) -> None:
    assert commands["compare"]["code"] == 0, commands["compare"]["stderr"]
    folder = commands["folder"]["path"] / "compare" / "reports" / "compare" / "demo"
    scorecard = json.loads((folder / "scorecard.json").read_text())
    assert json.dumps(scorecard).count("top_mass") >= 2


def test_a_plugin_that_cannot_load_is_named_in_one_line(commands: dict[str, dict]) -> None:
    broken = commands["broken"]
    assert broken["code"] == 1
    assert ("attribution 'demo_broken': entry point 'demo_broken' of aftb-demo-plugin 0.1 (group "
            "aft_bench.attributions) cannot be loaded") in broken["stderr"]
    assert "RuntimeError: this demo module is broken" in broken["stderr"] and "Traceback" not in broken["stderr"]


def test_the_walkthrough_metric_has_its_known_answers(plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(plugin_path))
    import torch

    module = importlib.import_module(f"{PLUGIN}.top_mass")
    one_hot = torch.zeros(1, 10, 10)
    one_hot[0, 3, 4] = 5.0
    values = module.top_mass(torch.cat([one_hot, torch.ones(1, 10, 10), -torch.ones(1, 10, 10)]))
    assert values.tolist() == [1.0, 0.1, 0.1]
    assert module.top_mass(torch.ones(1, 3, 3)).tolist() == [1 / 9]  # max(1, 9 // 10) = 1 pixel of 9
