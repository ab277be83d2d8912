"""The sanity checks (Adebayo et al. 2018): the tower's units and their re-initialisation on every backend kind,
and the task end to end with methods whose answers are known: an edge detector and the random baseline (they ignore
the weights: 1 at every step) and a method that reads only the stem's weights (1 until the stem is re-drawn)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.attributions.base import Attribution, Target
from aft_bench.core.registries import ATTRIBUTIONS, ENCODERS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.models.randomisation import Randomiser, fresh_state, tower_units
from aft_bench.tasks.sanity_checks import plan

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = ("tiny_vit", "tiny_cnn", "tiny_timm")
MEASURES = ("spearman", "spearman_abs", "ssim", "hog")
SOBEL = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


class EdgeDetector(Attribution):
    """Sobel gradient magnitude of the grey image (Adebayo et al.'s edge detector): it reads no weight."""

    name = "edge"

    def attribute(self, encoder: Encoder, images: torch.Tensor, target: Target) -> torch.Tensor:
        grey = images.mean(dim=1, keepdim=True)
        kernels = torch.stack([SOBEL, SOBEL.T])[:, None].to(images)
        return F.conv2d(grey, kernels, padding=1).norm(dim=1)


class StemFilter(Attribution):
    """The grey image filtered with the ViT stem's first patch filter: a map that depends on the stem's weights only."""

    name = "stem_filter"
    supports = frozenset({"vit"})

    def attribute(self, encoder: Encoder, images: torch.Tensor, target: Target) -> torch.Tensor:
        kernel = encoder.visual.conv1.weight[0].sum(dim=0)[None, None].detach()
        grey = images.mean(dim=1, keepdim=True)
        size = kernel.shape[-1]
        padded = F.pad(grey, (size // 2, (size - 1) // 2, size // 2, (size - 1) // 2), mode="reflect")
        return F.conv2d(padded, kernel.to(images))[:, 0]


class Flat(Attribution):
    """A constant map: nothing to rank."""

    name = "flat"

    def attribute(self, encoder: Encoder, images: torch.Tensor, target: Target) -> torch.Tensor:
        return torch.ones(images.shape[0], *images.shape[2:], device=images.device)


# ---------------------------------------------------------------------------------------- units and weights
@pytest.mark.parametrize("fixture", KINDS)
def test_units_partition_the_tower_top_first(fixture: str, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(fixture)
    units = tower_units(encoder)
    labels = [u.label for u in units]
    expected = {"tiny_vit": ["head", "block1", "block0", "stem"],
                "tiny_cnn": ["head", "layer4", "layer3", "layer2", "layer1", "stem"],
                "tiny_timm": ["head", "stage3", "stage2", "stage1", "stage0", "stem"]}[fixture]
    assert labels == expected
    keys = [k for u in units for k in u.keys]
    assert len(keys) == len(set(keys)) and set(keys) == set(encoder.visual.state_dict())


@pytest.mark.parametrize("fixture", KINDS)
def test_randomiser_switches_units_and_never_touches_the_original(fixture: str,
                                                                  request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(fixture)
    before = copy.deepcopy(encoder.visual.state_dict())
    randomiser = Randomiser(encoder, seed=0)
    fresh = fresh_state(encoder.visual, 0)
    top, *_, stem = randomiser.units
    state = randomiser.randomise([top.label]).visual.state_dict()
    for unit in randomiser.units:
        for key in unit.keys:
            torch.testing.assert_close(state[key], (fresh if unit is top else before)[key], rtol=0, atol=0)
    state = randomiser.randomise([stem.label]).visual.state_dict()  # independent: the top unit is trained again
    assert all(torch.equal(state[k], before[k]) for k in top.keys)
    assert all(torch.equal(state[k], fresh[k]) for k in stem.keys)
    randomiser.randomise(randomiser.labels)
    images = torch.rand(2, 3, *encoder.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(randomiser.encoder(images), encoder(images), atol=1e-3)
        torch.testing.assert_close(randomiser.randomise([]).visual(encoder.normalize(images)),
                                   encoder.visual(encoder.normalize(images)), rtol=0, atol=0)
    assert all(torch.equal(v, before[k]) for k, v in encoder.visual.state_dict().items())
    with pytest.raises(ValueError, match="no unit \\['block9'\\]"):
        randomiser.randomise(["block9"])


def test_the_draw_is_seeded_and_uses_each_layers_initialiser() -> None:
    cfg = copy.deepcopy(TINY_VIT_CFG)
    cfg["vision_cfg"]["pos_embed_type"] = "sin_cos_2d"  # a fixed (untrained) position embedding, as the toy's
    encoder = make_encoder(cfg, "tiny-sincos")
    fresh, again, other = (fresh_state(encoder.visual, s) for s in (0, 0, 1))
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    assert not torch.equal(fresh["conv1.weight"], other["conv1.weight"])
    assert torch.equal(fresh["ln_post.weight"], torch.ones(32)) and torch.equal(fresh["ln_post.bias"], torch.zeros(32))
    fan_in = encoder.visual.transformer.resblocks[0].mlp.c_fc.in_features
    assert float(fresh["transformer.resblocks.0.mlp.c_fc.weight"].abs().max()) <= fan_in ** -0.5  # Kaiming-uniform
    assert torch.equal(fresh["transformer.resblocks.0.attn.out_proj.bias"], torch.zeros(32))  # MHA's own init
    assert float(fresh["class_embedding"].std()) == pytest.approx(32 ** -0.5, rel=0.35)  # N(0, 1/width)
    assert "positional_embedding" not in {k for u in tower_units(encoder) for k in u.keys}  # not trained: kept


def test_batch_norm_statistics_restart_and_a_frozen_tower_is_refused(tiny_cnn: Encoder) -> None:
    fresh = fresh_state(tiny_cnn.visual, 0)
    assert torch.equal(fresh["layer1.0.bn1.running_mean"], torch.zeros(8))
    assert torch.equal(fresh["layer1.0.bn1.running_var"], torch.ones(8))
    frozen = copy.deepcopy(tiny_cnn).requires_grad_(False)
    with pytest.raises(UnsupportedEncoderError, match="nothing to re-initialise .*requires_grad_\\(False\\)"):
        tower_units(frozen)


def test_the_plan_computes_each_set_of_units_once(tiny_vit: Encoder) -> None:
    state = plan(Randomiser(tiny_vit, 0), independent=True)
    assert [sorted(s) for s in state.sets] == [["head"], ["block1", "head"], ["block0", "block1", "head"],
                                               ["block0", "block1", "head", "stem"], ["block1"], ["block0"], ["stem"]]
    assert state.cascading == (0, 1, 2, 3) and state.independent == (0, 4, 5, 6)  # "head alone" is step 1
    assert plan(Randomiser(tiny_vit, 0), independent=False).independent == ()


# ---------------------------------------------------------------------------------------- the task
def _config(encoder: str, out: Path, attributions: list[str], samples: int = 3, **options):
    return resolve_config("sanity_checks", dict(encoders=[encoder], attributions=attributions, limit=4,
                                                batch_size=3, out=str(out), options={"samples": samples, **options}))


def test_methods_that_ignore_the_weights_score_1_at_every_step(tiny48_ckpt: str, tmp_path: Path,
                                                                registered) -> None:
    registered(ATTRIBUTIONS, "edge", EdgeDetector)
    results = run(_config(tiny48_ckpt, tmp_path, ["edge", "random"])).results
    for result in results:
        assert result.n == 3 and set(result.metrics) == set(MEASURES)
        for measure in MEASURES:
            assert result.metrics[measure]["mean"] == pytest.approx(1.0, abs=1e-9)
            assert result.metrics[measure]["higher_is_better"] is False
            for mode in ("cascading", "independent"):
                assert result.extra["curves"][mode][measure]["mean"] == pytest.approx([1.0] * 4, abs=1e-9)
    folder = tmp_path / "sanity_checks" / "curves"
    for result in results:
        assert all((folder / name).is_file() for name in result.extra["files"].values())
    assert len(list(folder.glob("*__methods__*.png"))) == 1
    table = (folder / results[0].extra["files"]["md"]).read_text()
    assert "| up to stem | 1.000" in table and "## independent randomisation" in table


def test_a_method_reading_only_the_stem_changes_only_when_the_stem_does(tiny48_ckpt: str, tmp_path: Path,
                                                                       registered) -> None:
    registered(ATTRIBUTIONS, "stem_filter", StemFilter)
    (result,) = run(_config(tiny48_ckpt, tmp_path, ["stem_filter"])).results
    assert result.extra["units"] == ["head", "block1", "block0", "stem"]
    for measure in MEASURES:
        cascading = result.extra["curves"]["cascading"][measure]["mean"]
        independent = result.extra["curves"]["independent"][measure]["mean"]
        assert cascading[:3] == pytest.approx([1.0] * 3, abs=1e-9) and cascading[3] < 0.95
        assert independent[:3] == pytest.approx([1.0] * 3, abs=1e-9) and independent[3] == cascading[3]
        assert result.metrics[measure]["mean"] == pytest.approx(cascading[3])


@pytest.mark.parametrize("fixture", ["tiny_cnn", "tiny_timm"])
def test_runs_on_cnn_towers(fixture: str, tmp_path: Path, registered, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(fixture)
    registered(ENCODERS, fixture, lambda device="cpu": encoder)
    (result,) = run(_config(fixture, tmp_path, ["simple_gradient"], samples=2, independent=False)).results
    assert result.n == 2 and "independent" not in result.extra["curves"]
    curve = result.extra["curves"]["cascading"]
    assert curve["randomised"] == [u.label for u in tower_units(encoder)]
    assert all(-1 <= v <= 1 for m in MEASURES for v in curve[m]["mean"])
    assert result.metrics["spearman"]["mean"] < 0.9  # a gradient of re-drawn weights is another map


def test_a_constant_map_is_excluded(tiny48_ckpt: str, tmp_path: Path, registered) -> None:
    registered(ATTRIBUTIONS, "flat", Flat)
    (result,) = run(_config(tiny48_ckpt, tmp_path, ["flat"])).results
    assert result.n == 0 and result.excluded == {"constant map": 3}
    assert result.metrics["spearman"]["mean"] is None  # no image scored: no mean (NaN is stored as null)
    assert result.extra["curves"]["cascading"]["spearman"]["mean"] == [None] * 4
