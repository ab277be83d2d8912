"""Each encoder backend on tiny random models saved to disk in the library's own format and loaded by spec:
a transformers ``CLIPModel`` (``save_pretrained``), a vision + text tower pair, timm ViT and ResNet classifiers
(safetensors), the ``head`` target, the normalisation override and the refusals. Builders here are shared by the
other ``test_backend_*`` files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from aft_bench.core.registries import ENCODER_BACKENDS, TARGETS
from aft_bench.core.registry import UnknownNameError
from aft_bench.data.base import Batch, DataError
from aft_bench.evaluation.targets.head import HeadTarget, head_target
from aft_bench.models.backend import EncoderBackend
from aft_bench.models.backends.transformers import HFClipEncoder
from aft_bench.models.checkpoints import CheckpointError
from aft_bench.models.encoder import IMAGENET_MEAN, IMAGENET_STD, OPENAI_STD, Encoder, UnsupportedEncoderError
from aft_bench.models.loading import load_encoder, save_encoder

TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 16, "vocab_size": 49408}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}
TIMM_VIT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2})
TIMM_RESNET = ("test_resnet", {})
TIMM_INPUT = {"test_resnet": [3, 64, 64]}  # timm's pretrained_cfg overlay: a small input for a fast CNN
NUM_CLASSES = 5
PROCESSOR_MEAN, PROCESSOR_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


# ---------------------------------------------------------------------------------------- builders
def save_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer (open_clip's bundled vocabulary, Hugging Face's special token names) in ``folder``."""
    simple = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps({special.get(k, k): v for k, v in simple.encoder.items()}))
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt")).save_pretrained(folder)


def save_processor(folder: Path, mean=PROCESSOR_MEAN, std=PROCESSOR_STD) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": list(mean), "image_std": list(std)}))


def save_hf_clip(folder: Path, seed: int = 0) -> Path:
    """A random tiny ``CLIPModel`` written with ``save_pretrained``, with a tokenizer and a processor config."""
    torch.manual_seed(seed)
    from transformers import CLIPModel

    CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)).eval().save_pretrained(folder)
    save_tokenizer(folder)
    save_processor(folder)
    return folder


def save_timm(path: Path, arch: str, args: dict, seed: int = 0) -> Path:
    """A random timm classifier's state dict as safetensors, timm's ``config.json`` (model_args) beside it."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES, **args)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    config = {"architecture": arch, "num_classes": NUM_CLASSES, "model_args": args}
    if arch in TIMM_INPUT:
        config["pretrained_cfg"] = {"input_size": TIMM_INPUT[arch]}
    (path.parent / "config.json").write_text(json.dumps(config))
    return path


def images_for(encoder: Encoder, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *encoder.image_size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_hf_clip(tmp_path_factory.mktemp("hf") / "clip")


@pytest.fixture(scope="module")
def timm_vit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_timm(tmp_path_factory.mktemp("timm_vit") / "weights.safetensors", *TIMM_VIT)


@pytest.fixture(scope="module")
def timm_resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_timm(tmp_path_factory.mktemp("timm_rn") / "weights.safetensors", *TIMM_RESNET)


# ---------------------------------------------------------------------------------------- transformers
def test_hf_folder_loads_with_its_processor_and_tokenizer(hf_folder: Path) -> None:
    from transformers import CLIPModel

    encoder = load_encoder(f"hf:{hf_folder}")
    assert isinstance(encoder, HFClipEncoder) and encoder.kind == "vit" and encoder.image_size == (32, 32)
    assert encoder.grid_size == (4, 4) and len(encoder.blocks) == 2
    torch.testing.assert_close(encoder.mean.flatten(), torch.tensor(PROCESSOR_MEAN))
    reference = CLIPModel.from_pretrained(hf_folder, local_files_only=True).eval()
    images = images_for(encoder)
    pixels = (images - torch.tensor(PROCESSOR_MEAN).view(1, 3, 1, 1)) / torch.tensor(PROCESSOR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.normalize(reference.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        torch.testing.assert_close(encoder(images), expected, atol=1e-6, rtol=1e-5)
        tokens = CLIPTokenizer.from_pretrained(hf_folder)(["a red circle"], padding="max_length", max_length=16,
                                                          return_tensors="pt")
        text = F.normalize(reference.get_text_features(**tokens).pooler_output, dim=-1)
    torch.testing.assert_close(encoder.encode_text(["a red circle"]), text, atol=1e-6, rtol=1e-5)


def test_vision_and_text_tower_pair(tmp_path: Path) -> None:
    torch.manual_seed(3)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION, projection_dim=16))
    text = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT, projection_dim=16))
    vision.save_pretrained(tmp_path / "vision")
    text.save_pretrained(tmp_path / "text")
    save_tokenizer(tmp_path / "text")
    encoder = load_encoder(f"hf:{tmp_path / 'vision'}+{tmp_path / 'text'}")
    assert encoder.has_text and encoder.encode_text(["a", "b"]).shape == (2, 16)
    assert encoder(images_for(encoder)).shape == (2, 16)
    alone = load_encoder(f"hf:{tmp_path / 'vision'}")
    assert not alone.has_text
    with pytest.raises(UnsupportedEncoderError, match="has no text tower"):
        alone.encode_text(["a"])


def test_hf_pickle_that_would_run_code_is_refused(tmp_path: Path, hf_folder: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text((hf_folder / "config.json").read_text())

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weight": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="could run code"):
        load_encoder(f"hf:{folder}")
    assert not (tmp_path / "pwned").exists()


def test_hf_specs_that_name_nothing_fail_before_loading(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_encoder(f"hf:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_encoder("hf:nobody/no-such-clip-aftbench")


# ---------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("which", ["vit", "resnet"])
def test_timm_classifier_embeds_its_pre_logits(which: str, timm_vit_file: Path, timm_resnet_file: Path) -> None:
    path, (arch, args) = {"vit": (timm_vit_file, TIMM_VIT), "resnet": (timm_resnet_file, TIMM_RESNET)}[which]
    encoder = load_encoder(f"timm:{arch}@{path}")
    assert encoder.kind == {"vit": "vit", "resnet": "cnn"}[which] and not encoder.has_text
    assert encoder.image_size == {"vit": (32, 32), "resnet": (64, 64)}[which]  # the ViT's img_size, the config's
    reference = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                  num_classes=NUM_CLASSES, **args).eval()
    images = images_for(encoder)
    with torch.no_grad():
        features = reference.forward_head(reference.forward_features(encoder.normalize(images)), pre_logits=True)
        torch.testing.assert_close(encoder(images), F.normalize(features, dim=-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(encoder.mean.flatten(), torch.tensor(reference.pretrained_cfg["mean"]).float())
    with pytest.raises(UnsupportedEncoderError, match="has no text tower.*target=head"):
        batch = Batch(images=images, labels=torch.zeros(2), prompts=["a", "b"], ids=["0", "1"], masks=None)
        TARGETS.get("text")(encoder, batch)


def test_timm_folder_layout_and_refusals(tmp_path: Path) -> None:
    folder = save_timm(tmp_path / "hub" / "model.safetensors", *TIMM_VIT).parent  # timm's hub layout
    assert load_encoder(f"timm:{folder}").kind == "vit"
    with pytest.raises(UnknownNameError, match="timm model"):
        load_encoder("timm:vit_tinyy_patch16_224@x.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(f"timm:test_resnet@{tmp_path / 'missing.safetensors'}")
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_encoder(f"timm:resnet34@{save_timm(tmp_path / 'rn' / 'w.safetensors', *TIMM_RESNET)}")


def test_head_target_is_the_classifiers_logit(timm_vit_file: Path) -> None:
    encoder = load_encoder(f"timm:{TIMM_VIT[0]}@{timm_vit_file}")
    images = images_for(encoder, n=3)
    batch = Batch(images=images, labels=torch.tensor([0, 4, 2]), prompts=["", "", ""], ids=["a", "b", "c"], masks=None)
    target = head_target(encoder, batch)
    with torch.no_grad():
        logits = encoder.model(encoder.normalize(images))
        torch.testing.assert_close(target.score(encoder(images)), logits[torch.arange(3), batch.labels],
                                   atol=1e-5, rtol=1e-5)
    repeated = target.repeat_interleave(2)
    assert isinstance(repeated, HeadTarget) and repeated.classes.tolist() == [0, 0, 4, 4, 2, 2]
    bad = Batch(images=images, labels=torch.tensor([0, 9, -1]), prompts=["", "", ""], ids=["a", "b", "c"], masks=None)
    with pytest.raises(DataError, match="probe_class=top1"):
        head_target(encoder, bad)


def test_head_target_refuses_clip_encoders(tiny_vit: Encoder) -> None:
    batch = Batch(images=images_for(tiny_vit), labels=torch.zeros(2, dtype=torch.long), prompts=["", ""],
                  ids=["a", "b"], masks=None)
    with pytest.raises(UnsupportedEncoderError, match="'tiny-vit'.*no classifier head"):
        TARGETS.get("head")(tiny_vit, batch)


# ---------------------------------------------------------------------------------------- every backend
def test_every_backend_is_registered_and_saves_back_through_ckpt(tmp_path: Path, hf_folder: Path,
                                                                 timm_resnet_file: Path) -> None:
    assert set(ENCODER_BACKENDS.names()) == {"open_clip", "transformers", "timm", "named"}
    for name in ENCODER_BACKENDS.names():
        assert isinstance(ENCODER_BACKENDS.get(name), EncoderBackend), name
    for spec in (f"hf:{hf_folder}", f"timm:test_resnet@{timm_resnet_file}"):
        encoder = load_encoder(spec)
        written = save_encoder(encoder, tmp_path / encoder.backend / "enc", {"name": "again"})
        again = load_encoder(f"ckpt:{written}")
        assert type(again) is type(encoder) and again.card["backend"] == encoder.backend
        images = images_for(encoder)
        with torch.no_grad():
            torch.testing.assert_close(again(images), encoder(images), atol=0, rtol=0)


def test_normalisation_override_is_applied_and_recorded(timm_resnet_file: Path, tiny_ckpt: Path) -> None:
    spec = f"ckpt:{tiny_ckpt}?mean=imagenet"
    encoder = load_encoder(spec)
    torch.testing.assert_close(encoder.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(encoder.std.flatten(), torch.tensor(IMAGENET_STD))
    assert encoder.name == spec and encoder.card["normalisation"]["override"] == "mean=imagenet"
    plain = load_encoder(f"timm:test_resnet@{timm_resnet_file}")
    custom = load_encoder(f"timm:test_resnet@{timm_resnet_file}?mean=0.1,0.2,0.3&std=openai")
    torch.testing.assert_close(custom.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(custom.std.flatten(), torch.tensor(OPENAI_STD))
    assert custom.card["normalisation"]["replaced"]["mean"] == plain.mean.flatten().tolist()
    assert "normalisation" not in plain.card
    for bad, match in (("?mean=sepia", "neither a named set"), ("?std=1,0,1", "std > 0"), ("?mean=0.5", "three")):
        with pytest.raises(ValueError, match=match):
            load_encoder(f"ckpt:{tiny_ckpt}{bad}")


def test_listing_imports_no_model_library() -> None:
    code = ("import sys, contextlib, io\nfrom aft_bench.apps.cli import main, LISTS\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for what in LISTS:\n        assert main(['ls', what]) == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'timm', 'open_clip'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
