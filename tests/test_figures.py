"""Saliency-map grids (paper Figs. 1-4): panels, refusals, normalisation, the PNG and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CNN_CFG, make_encoder
from PIL import Image

from aft_bench.apps.cli import main
from aft_bench.evaluation.config import RunConfig
from aft_bench.models.loading import save_encoder
from aft_bench.reporting.saliency import PANEL_INCHES, _normalise, compute_panels, figure_context, saliency_figure


def _config(encoders: tuple[str, ...], attributions: tuple[str, ...], **changes) -> RunConfig:
    return RunConfig(task="figure", encoders=encoders, attributions=attributions, limit=3, **changes)


def test_normalise_maps_each_map_to_the_unit_range() -> None:
    maps = torch.stack([torch.arange(4.0).reshape(2, 2) * 3 - 5, torch.full((2, 2), 7.0)])
    out = _normalise(maps)
    np.testing.assert_allclose(out[0], [[0, 1 / 3], [2 / 3, 1]], rtol=1e-6)
    assert (out[1] == 0).all()  # a constant map has nothing to show


def test_panels_rows_and_refusals(tiny48_ckpt: str, tmp_path: Path) -> None:
    cnn = make_encoder(TINY_CNN_CFG, "tiny-cnn")
    cnn_spec = f"ckpt:{save_encoder(cnn, tmp_path / 'cnn.safetensors', cnn.card)}"
    batch, rows = compute_panels(figure_context(_config((tiny48_ckpt, cnn_spec), ("simple_gradient", "rollout"))))
    assert [(e, m) for e, m, _ in rows] == [(tiny48_ckpt, "simple_gradient"), (tiny48_ckpt, "rollout"),
                                           (cnn_spec, "simple_gradient")]  # rollout refuses the CNN
    assert len(batch) == 3 and tuple(batch.images.shape[2:]) == (48, 48)  # the first encoder's size
    assert rows[0][2].shape == (3, 48, 48) and rows[2][2].shape == (3, 64, 64)
    for _, _, maps in rows:
        assert maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize("overlay", [False, True])
def test_png_and_panel_list(tiny48_ckpt: str, tmp_path: Path, overlay: bool) -> None:
    out = saliency_figure(_config((tiny48_ckpt,), ("simple_gradient", "gradcam")), tmp_path / "f" / "s.png",
                          overlay=overlay)
    with Image.open(out) as image:
        width, height = image.size
    assert (width, height) == (round((PANEL_INCHES * 3 + 1.2) * 100), round(PANEL_INCHES * 3 * 100))
    panels = json.loads(out.with_suffix(".json").read_text())
    assert [r["attribution"] for r in panels["rows"]] == ["simple_gradient", "gradcam"]
    assert len(panels["images"]) == 3 and panels["images"][0]["prompt"].startswith("a photo of a")


def test_cli_figure(tiny48_ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid.png"
    assert main(["figure", "--encoders", tiny48_ckpt, "--attributions", "gradcam", "--images", "2",
                 "--out", str(out)]) == 0
    assert out.is_file() and "figure:" in capsys.readouterr().out
    assert main(["figure", "--encoders", tiny48_ckpt, "--attributions", "gradkam", "--out", str(out)]) == 2
    assert "gradcam" in capsys.readouterr().err  # did-you-mean
    assert main(["figure", "--encoders", tiny48_ckpt, "--option", "targt=probe", "--out", str(out)]) == 2
    assert "unknown option 'targt' for the figure command. Did you mean 'target'?" in capsys.readouterr().err


@pytest.mark.parametrize(("suffix", "magic"), [(".jpg", b"\xff\xd8\xff"), (".JPEG", b"\xff\xd8\xff"),
                                               (".pdf", b"%PDF"), (".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_figure_is_written_in_the_format_its_suffix_names(suffix: str, magic: bytes, tiny48_ckpt: str,
                                                          tmp_path: Path) -> None:
    out = saliency_figure(_config((tiny48_ckpt,), ("gradcam",)), tmp_path / f"grid{suffix}")
    assert out.read_bytes().startswith(magic)


def _no_loading(device: str = "cpu") -> None:
    raise AssertionError("an encoder was loaded")


@pytest.mark.parametrize(("out", "message"), [
    ("grid.gif", "--out {tmp}/grid.gif: cannot write a .gif figure; end the path in one of .png, .jpg, .jpeg, .pdf, "
                 ".svg"),
    ("grid", "--out {tmp}/grid: cannot write a suffix-less figure"),
    ("somefile.txt/grid.png", "--out {tmp}/somefile.txt: {tmp}/somefile.txt is a file, not a folder"),
    ("--images=0", "--images 0: give a positive number of images"),
])
def test_cli_figure_refuses_bad_output_before_any_work(out: str, message: str, registered, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from aft_bench.core.registries import ENCODERS

    registered(ENCODERS, "toy", _no_loading)
    (tmp_path / "somefile.txt").write_text("not a folder")
    args = [out] if out.startswith("--") else ["--out", str(tmp_path / out)]
    assert main(["figure", "--encoders", "toy", "--attributions", "gradcam", *args]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aft-bench: error: " + message.format(tmp=tmp_path))
