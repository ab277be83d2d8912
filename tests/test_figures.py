"""Saliency-map grids (paper Figs. 1-4): panels, refusals, normalisation, the PNG and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CNN_CFG, make_encoder
from PIL import Image

from aft_bench.cli import main
from aft_bench.config import RunConfig
from aft_bench.figures import PANEL_INCHES, _normalise, compute_panels, figure_context, saliency_figure
from aft_bench.loading import save_encoder


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
