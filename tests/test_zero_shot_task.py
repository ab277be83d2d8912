"""The zero-shot accuracy and robustness task end to end on a tiny encoder and the shapes world."""

from __future__ import annotations

from pathlib import Path

import pytest

from aft_bench.core.registries import TASKS
from aft_bench.core.registry import UnknownNameError
from aft_bench.data.base import DataError, select_ids
from aft_bench.data.shapes import CLASSNAMES, ShapesDataset
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.results.files import read_results
from aft_bench.results.store import SampleStore
from aft_bench.tasks import zero_shot


def _config(tiny48_ckpt: str, out: Path, **changes):
    options = {"eps": [1e-4, 8], "steps": 3, "n_targets": 2, "robust_n": 4}
    options.update(changes.pop("options", {}))
    overrides = dict(encoders=[tiny48_ckpt], limit=8, batch_size=8, out=str(out), options=options)
    overrides.update(changes)
    return resolve_config("zero_shot", overrides)


def _records(out: Path) -> dict[str, dict]:
    (path,) = (out / "zero_shot" / "samples").glob("*.jsonl")
    return SampleStore(path)._records


def test_clean_on_all_robust_on_a_seeded_subset(tiny48_ckpt: str, tmp_path: Path) -> None:
    outcome = run(_config(tiny48_ckpt, tmp_path))
    (result,) = outcome.results
    assert result.attribution == "apgd-ce+apgd-t" and result.n == 8
    assert list(result.metrics) == ["clean", "robust@0.0001/255", "robust@8/255"]
    assert result.metrics["clean"]["n"] == 8 and result.metrics["robust@8/255"]["n"] == 4
    records = _records(tmp_path)
    attacked = [r for r in records.values() if "robust@8/255" in r["scores"]]
    selected = select_ids(ShapesDataset(48, size=100).ids(), 8, 0)  # the run's samples (limit 8, seed 0; 100 images)
    assert [r["id"] for r in attacked] == select_ids(selected, 4, 0) != selected[:4]
    for record in attacked:
        scores = record["scores"]
        assert scores["robust@8/255"] <= scores["robust@0.0001/255"] <= scores["clean"]
        # a radius of 1e-4/255 cannot flip a prediction with a clear margin: robust equals clean
        assert scores["robust@0.0001/255"] == scores["clean"]
    assert "| robust@8/255 ↑ |" in outcome.markdown


def test_a_sample_scores_the_same_in_any_batch(tiny48_ckpt: str, tmp_path: Path) -> None:
    run(_config(tiny48_ckpt, tmp_path / "a", batch_size=8))
    run(_config(tiny48_ckpt, tmp_path / "b", batch_size=3))
    assert _records(tmp_path / "a") == _records(tmp_path / "b")


def test_attacked_samples_share_full_batches(tiny48_ckpt: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    original = zero_shot.robust_correct

    def counting(logits_fn, images, *args, **kwargs):
        sizes.append(len(images))
        return original(logits_fn, images, *args, **kwargs)

    monkeypatch.setattr(zero_shot, "robust_correct", counting)
    run(_config(tiny48_ckpt, tmp_path, batch_size=4))
    assert sizes == [4, 4]  # one call per radius, with all 4 attacked samples, not spread over the batches


def test_the_store_depends_on_the_limit(tiny48_ckpt: str, tmp_path: Path) -> None:
    run(_config(tiny48_ckpt, tmp_path))
    run(_config(tiny48_ckpt, tmp_path, limit=6))  # another selection: other samples are attacked
    assert len(list((tmp_path / "zero_shot" / "samples").glob("*.jsonl"))) == 2
    assert {r.n for r in read_results(tmp_path)} == {8, 6}


@pytest.mark.parametrize(("changes", "message"), [
    ({"attributions": ["gradcam"]}, "not attribution maps"),
    ({"options": {"eps": [0]}}, "option eps"),
    ({"options": {"attacks": ["fgsm"]}}, "unknown attack 'fgsm'"),
    ({"options": {"classifier": "knn"}}, "unknown classifier 'knn'"),
    ({"options": {"steps": 0}}, "option steps"),
    ({"options": {"robust": 3}}, "unknown option 'robust'.*Did you mean 'robust_n'"),
])
def test_bad_settings_are_refused_by_name(tiny48_ckpt: str, tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises((ValueError, UnknownNameError), match=message):
        run(_config(tiny48_ckpt, tmp_path, **changes))
    assert not (tmp_path / "zero_shot").exists()


def test_datasets_without_enough_classes_are_refused(tiny48_ckpt: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ShapesDataset, "classnames", CLASSNAMES[:3])
    with pytest.raises(ValueError, match="3 classes; APGD-T"):
        run(_config(tiny48_ckpt, tmp_path))
    monkeypatch.setattr(ShapesDataset, "classnames", [])
    with pytest.raises(DataError, match="0 classes: zero-shot accuracy needs a labelled dataset"):
        run(_config(tiny48_ckpt, tmp_path))


def test_the_linear_probe_can_be_attacked_instead(tiny48_ckpt: str, tmp_path: Path) -> None:
    (result,) = run(_config(tiny48_ckpt, tmp_path, options={"classifier": "probe", "eps": [8]})).results
    assert result.attribution == "apgd-ce+apgd-t@probe" and result.metrics["robust@8/255"]["n"] == 4
    for record in _records(tmp_path).values():  # robust implies clean, per sample
        assert record["scores"].get("robust@8/255", 0.0) <= record["scores"]["clean"]


def test_registered_and_shardable() -> None:
    assert TASKS.get("zero_shot").shardable
