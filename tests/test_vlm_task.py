"""The vlm_attention task end to end on a tiny random LLaVA (loaded by path) and a tiny encoder checkpoint, with
--limit: its columns, answers in the per-sample store, resume, answer accuracy and the exclusion of empty answers
(known answers through a stand-in for the answer step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aft_bench.data.shapes import CLASSNAMES
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.metrics.tokens import NO_TOKENS
from aft_bench.models.vlm.answer import Answer
from aft_bench.tasks import vlm_attention
from aft_bench.tasks.vlm_attention import normalise_answer, token_scores
from aft_bench.toys.vlm.synthetic import LlavaShape, random_llava_folder

COLUMNS = ["pg", "pg_energy", "pixel_acc", "ap", "mask_iou", "gini", "answer_acc"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_llava_folder(tmp_path_factory.mktemp("vlm") / "llava48", CLASSNAMES, LlavaShape(image_size=48))


def _config(encoder: str, folder: Path, out: Path, **options):
    return resolve_config("vlm_attention", dict(encoders=[encoder], limit=5, batch_size=2, out=str(out),
                                                options={"vlm": str(folder), "max_new_tokens": 3, **options}))


def test_end_to_end_with_limit_and_resume(tiny48_ckpt: str, folder: Path, tmp_path: Path, one_thread,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = run(_config(tiny48_ckpt, folder, tmp_path))
    (result,) = outcome.results
    assert list(result.metrics) == COLUMNS and result.n == 5 and result.attribution == "llava:llava48"
    for name, summary in result.metrics.items():
        assert 0.0 <= summary["mean"] <= 100.0, name
    lines = [json.loads(line) for line in (tmp_path / "vlm_attention" / result.samples_file).read_text().splitlines()]
    assert len(lines) == 5
    for record in lines:
        assert record["class"] in CLASSNAMES and len(record["tokens"]) == len(record["per_token"]) >= 1
        assert record["scores"]["pg"] == max(t["pg"] for t in record["per_token"])
    assert result.extra["vlm"]["vlm"] == str(folder) and sum(result.extra["answers"].values()) == 5
    calls = []
    monkeypatch.setattr(vlm_attention, "answer_maps", lambda *a, **k: calls.append(1))
    again = run(_config(tiny48_ckpt, folder, tmp_path)).results[0]
    assert not calls and again.metrics == result.metrics  # resumed from the store: nothing recomputed


def test_answer_accuracy_and_empty_answers(tiny48_ckpt: str, folder: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in answers the right class for the first image of each batch of 2 and nothing for the second."""
    seen: list[int] = []

    def fake(vlm, pixels, prompt, max_new_tokens, choices, size):
        out = []
        for k in range(len(pixels)):
            seen.append(1)
            if k == 0:
                maps = torch.zeros(1, *size)
                maps[0, 0, 0] = 1.0
                out.append(Answer([5], ["x"], "", maps))
            else:
                out.append(Answer([], [], "", torch.zeros(0, *size)))
        return out

    monkeypatch.setattr(vlm_attention, "answer_maps", fake)
    monkeypatch.setattr(vlm_attention.VlmAttention, "_record", _with_true_answer(vlm_attention.VlmAttention._record))
    result = run(_config(tiny48_ckpt, folder, tmp_path)).results[0]
    firsts = 3  # 5 images in batches of 2: 3 first images, 2 second ones
    assert result.excluded == {NO_TOKENS: 5 - firsts} and len(seen) == 5
    assert result.metrics["answer_acc"]["mean"] == pytest.approx(100 * firsts / 5)
    assert result.metrics["pg"]["n"] == firsts and result.metrics["answer_acc"]["n"] == 5


def _with_true_answer(record):
    """``_record`` with a token-bearing answer's text replaced by the image's class name, in another case."""

    def patched(self, answer, label, mask, state, per_token):
        if answer.token_ids:
            answer = Answer(answer.token_ids, answer.tokens, f" {state.classnames[label].upper()}.", answer.maps)
        return record(self, answer, label, mask, state, per_token)

    return patched


def test_normalised_answers() -> None:
    assert normalise_answer(" Tench. ") == "tench" == normalise_answer("TENCH")
    assert normalise_answer("chain-saw") == normalise_answer("chain  saw") == "chain saw"
    assert normalise_answer("chainsaw") != normalise_answer("chain saw")


def test_token_scores_known_answers() -> None:
    mask = torch.zeros(4, 4, dtype=torch.int8)
    mask[:2, :2] = 1
    hit, miss = torch.zeros(4, 4), torch.zeros(4, 4)
    hit[0, 0], miss[3, 3] = 1.0, 1.0
    empty = torch.zeros(4, 4, dtype=torch.int8)
    scores = token_scores(torch.stack([hit, miss, hit]), torch.stack([mask, mask, empty]), tolerance=0.0)
    assert [s["pg"] for s in scores[:2]] == [1.0, 0.0] and [s["pg_energy"] for s in scores[:2]] == [1.0, 0.0]
    assert scores[0]["gini"] == pytest.approx(1 - 1 / 16)
    assert set(scores[2]) == {"gini"}  # an empty mask: the Gini index alone
    assert [set(s) for s in token_scores(hit[None], None, 0.0)] == [{"gini"}]  # no mask: likewise


def test_figure_draws_one_panel_per_answer_token(tiny48_ckpt: str, folder: Path, tmp_path: Path) -> None:
    from aft_bench.apps.cli import main

    out = tmp_path / "fig7.png"
    code = main(["figure", "--task", "vlm_attention", "--encoders", tiny48_ckpt, "--vlm", str(folder), "--images", "2",
                 "--option", "max_new_tokens=2", "--out", str(out)])
    panels = json.loads(out.with_suffix(".json").read_text())
    assert code == 0 and out.stat().st_size > 0 and out.read_bytes()[:4] == b"\x89PNG"
    assert len(panels["rows"]) == 2 and all(1 <= len(row["tokens"]) <= 2 for row in panels["rows"])


def test_images_without_masks_get_maps_and_the_gini_index_only(tiny48_ckpt: str, folder: Path, tmp_path: Path,
                                                               one_thread) -> None:
    """A folder of pictures (as the paper's COCO images of Fig. 7) has no masks: the maps are scored by Gini alone."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for name in ("circle", "square"):
        (tmp_path / "pictures" / name).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(40, 56, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "pictures" / name / f"{i}.png")
    config = resolve_config("vlm_attention", dict(encoders=[tiny48_ckpt], dataset="image_folder",
                                                  data_root=str(tmp_path / "pictures"), batch_size=2,
                                                  out=str(tmp_path / "out"),
                                                  options={"vlm": str(folder), "max_new_tokens": 2}))
    (result,) = run(config).results
    lines = [json.loads(line) for line in
             (tmp_path / "out" / "vlm_attention" / result.samples_file).read_text().splitlines()]
    assert len(lines) == 4
    for record in lines:
        assert set(record["scores"]) <= {"gini", "answer_acc"} and "gini" in record["scores"]
        assert all(set(token) == {"gini"} for token in record["per_token"])
    assert 0.0 <= result.metrics["gini"]["mean"] <= 100.0
