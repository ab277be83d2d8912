"""Loading round trips: full and vision-only state dicts, .pt and safetensors, refusals."""

from __future__ import annotations

import copy
import json

import open_clip
import pytest
import torch
from conftest import TINY_CNN_CFG, TINY_TIMM_CFG, TINY_VIT_CFG, make_encoder
from safetensors.torch import save_file

from aft_bench.core.registry import UnknownNameError
from aft_bench.models.backends.open_clip_models import model_config
from aft_bench.models.checkpoints import CheckpointError, load_state_dict_safely
from aft_bench.models.loading import load_encoder, save_encoder


@pytest.fixture(scope="module")
def small_archs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real open_clip architectures (ViT-B-32 and RN50) at reduced depth/size, registered with open_clip."""
    folder = tmp_path_factory.mktemp("model_configs")
    vit = copy.deepcopy(model_config("ViT-B-32"))
    vit["vision_cfg"].update(layers=2, image_size=64, width=64, head_width=32)
    vit["text_cfg"].update(layers=1, width=64, heads=2)
    vit["embed_dim"] = 32
    rn = copy.deepcopy(model_config("RN50"))
    rn["vision_cfg"].update(layers=[1, 1, 1, 1], width=8, image_size=64, head_width=16)
    rn["text_cfg"].update(layers=1, width=64, heads=2)
    rn["embed_dim"] = 32
    names = {"vit": "ViT-B-32-aftbench-test", "cnn": "RN50-aftbench-test"}
    for key, cfg in (("vit", vit), ("cnn", rn)):
        (folder / f"{names[key]}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return names


def _embeds(encoder, seed: int = 0) -> torch.Tensor:
    images = torch.rand(2, 3, *encoder.image_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return encoder(images)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
@pytest.mark.parametrize("scope", ["full", "vision", "nested"])
def test_round_trip(small_archs: dict[str, str], tmp_path, kind: str, fmt: str, scope: str) -> None:
    arch = small_archs[kind]
    torch.manual_seed(1)
    source = open_clip.create_model(arch, pretrained=None).eval()
    state = source.state_dict() if scope == "full" else source.visual.state_dict()
    path = tmp_path / f"w.{fmt}"
    if fmt == "pt":
        torch.save({"vision_encoder_state_dict": state} if scope == "nested" else state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    encoder = load_encoder(f"{arch}@{path}")
    assert encoder.kind == kind
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(source.encode_image(encoder.normalize(images)), dim=-1)
    torch.testing.assert_close(_embeds(encoder), expected)
    assert encoder.card["checkpoint_kind"] == ("full" if scope == "full" else "vision")


def test_save_encoder_card_round_trip(tmp_path) -> None:
    for cfg in (TINY_VIT_CFG, TINY_CNN_CFG, TINY_TIMM_CFG):
        encoder = make_encoder(cfg, "tiny", seed=3)
        path = save_encoder(encoder, tmp_path / "enc", {"model_cfg": cfg, "name": "tiny"})
        assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
        loaded = load_encoder(f"ckpt:{path}")
        torch.testing.assert_close(_embeds(loaded), _embeds(encoder))
        torch.testing.assert_close(loaded.encode_text(["a red circle"]), encoder.encode_text(["a red circle"]))


class Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_pickled_object_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load .*evil.pt"):
        load_state_dict_safely(path)


def test_mismatch_names_keys(small_archs: dict[str, str], tmp_path) -> None:
    vit = open_clip.create_model(small_archs["vit"], pretrained=None)
    path = tmp_path / "vit.pt"
    torch.save(vit.visual.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"vit.pt \(vision-only state dict\) does not match") as info:
        load_encoder(f"{small_archs['cnn']}@{path}")
    assert "missing keys [attnpool." in str(info.value)
    assert "unexpected keys [class_embedding" in str(info.value)


def test_bad_files_and_names(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_safely(tmp_path / "missing.pt")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_state_dict_safely(broken)
    with pytest.raises(CheckpointError, match="no card"):
        load_encoder(f"ckpt:{tmp_path / 'x.safetensors'}")
    with pytest.raises(UnknownNameError, match="Did you mean 'toy'"):
        load_encoder("tyo")


def test_unknown_architecture_before_at_is_an_unknown_name(tmp_path) -> None:
    with pytest.raises(UnknownNameError, match="unknown open_clip architecture 'ViT-B-166'. Did you mean 'ViT-B-16'"):
        load_encoder(f"ViT-B-166@{tmp_path / 'w.pt'}")
    with pytest.raises(UnknownNameError, match="Did you mean 'openai'"):
        load_encoder("ViT-B-16:opena")


def test_a_card_without_an_architecture_names_the_file(tmp_path) -> None:
    encoder = make_encoder(TINY_VIT_CFG, "tiny")
    path = save_encoder(encoder, tmp_path / "enc.safetensors", {"model_cfg": TINY_VIT_CFG})
    card = path.with_suffix(".json")
    card.write_text(json.dumps({"name": "tiny"}))
    with pytest.raises(CheckpointError, match=f"card {card} names no architecture"):
        load_encoder(f"ckpt:{path}")
    card.write_text("{not json")
    with pytest.raises(CheckpointError, match=f"card {card} is not valid JSON"):
        load_encoder(f"ckpt:{path}")


def test_pretrained_weights_missing_from_the_cache_fail_at_once_naming_the_folder(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("AFT_BENCH_ONLINE", raising=False)
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("open_clip was asked to download"))
    folder = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    with pytest.raises(FileNotFoundError, match=f"searched {folder}.*AFT_BENCH_ONLINE=1"):
        load_encoder("ViT-B-16:openai")
    with pytest.raises(FileNotFoundError, match="models--laion--CLIP-ViT-B-16-laion2B-s34B-b88K"):
        load_encoder("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K")


def test_cached_pretrained_weights_load_with_the_hub_offline(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    snapshot = tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    seen = []

    def create_model(arch, pretrained=None, **kwargs):
        seen.append((arch, pretrained, constants.HF_HUB_OFFLINE))
        return make_encoder(TINY_VIT_CFG, "tiny").model

    monkeypatch.setattr(open_clip, "create_model", create_model)
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda arch: None)
    before = constants.HF_HUB_OFFLINE
    load_encoder("ViT-B-16:openai")
    monkeypatch.setenv("AFT_BENCH_ONLINE", "1")
    load_encoder("ViT-B-16:laion2b_s34b_b88k")  # not cached, but downloads are allowed: no check, hub online
    assert seen == [("ViT-B-16", "openai", True), ("ViT-B-16", "laion2b_s34b_b88k", before)]
    assert constants.HF_HUB_OFFLINE == before
