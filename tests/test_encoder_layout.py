"""The ViT token layout the Encoder holds: blocks, block indices, batch-first tokens, class and patch tokens, the grid.

Both layouts open_clip runs blocks in are covered: batch-first (the default) and sequence-first (open_clip's
``Transformer(batch_first=False)``), the latter as a twin of the tiny ViT with the same weights, on which every
layout-dependent method must give the batch-first encoder's numbers.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import Transformer
from test_attr_registry import hf_vit, timm_vit  # noqa: F401 (fixtures)

from aft_bench.attributions.attention_map import AttentionMap
from aft_bench.attributions.grad_eclip import GradECLIP
from aft_bench.attributions.gradcam import GradCAM
from aft_bench.attributions.m2ib import M2IB
from aft_bench.attributions.rollout import Rollout
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.activations import LayerSpec, neuron_activations, spatial_activations
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError

GRID, TOKENS, WIDTH = 4, 17, 32  # the tiny ViT: 32 px, 8 px patches, a class token, width 32


@pytest.fixture(scope="module")
def sequence_first_vit(tiny_vit: Encoder) -> Encoder:
    """The tiny ViT with its blocks rebuilt sequence-first (N x B x C between blocks), weights copied."""
    twin = copy.deepcopy(tiny_vit)
    old = twin.visual.transformer
    block = old.resblocks[0]
    new = Transformer(
        old.width,
        old.layers,
        block.attn.num_heads,
        mlp_ratio=block.mlp.c_fc.out_features / old.width,
        act_layer=type(block.mlp.gelu),
        norm_layer=type(block.ln_1),
        batch_first=False,
    )
    new.load_state_dict(old.state_dict())
    twin.visual.transformer = new.eval()
    return twin


@pytest.fixture(params=["tiny_vit", "sequence_first_vit"])
def vit(request: pytest.FixtureRequest) -> Encoder:
    return request.getfixturevalue(request.param)


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _block_output(encoder: Encoder, images: torch.Tensor, block: int) -> torch.Tensor:
    """Block ``block``'s output as the forward hook sees it (in the blocks' own layout)."""
    seen = []
    handle = encoder.blocks[block].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            encoder(images)
    finally:
        handle.remove()
    return seen[0]


def test_the_twin_is_the_same_model_in_the_other_layout(tiny_vit, sequence_first_vit):
    images = _images()
    assert sequence_first_vit.visual.transformer.batch_first is False
    with torch.no_grad():
        torch.testing.assert_close(sequence_first_vit(images), tiny_vit(images), atol=1e-6, rtol=1e-5)
    assert _block_output(tiny_vit, images, 0).shape == (3, TOKENS, WIDTH)
    assert _block_output(sequence_first_vit, images, 0).shape == (TOKENS, 3, WIDTH)


# ---------------------------------------------------------------------------------------- blocks
def test_blocks_are_the_towers_residual_blocks(vit, tiny_cnn):
    assert vit.blocks is vit.visual.transformer.resblocks and len(vit.blocks) == vit.num_blocks == 2
    assert vit.feature_layer() is vit.blocks[0] and vit.feature_layer(-1) is vit.blocks[1]
    with pytest.raises(UnsupportedEncoderError, match="'tiny-cnn' is a cnn"):
        tiny_cnn.blocks  # noqa: B018 - the property raises


def test_resolve_block_counts_negative_indices_from_the_end(tiny_vit, tiny_cnn):
    assert [tiny_vit.resolve_block(i) for i in (0, 1, -1, -2)] == [0, 1, 1, 0]
    for bad in (2, -3):
        with pytest.raises(ValueError, match=f"block {bad} out of range for 'tiny-vit' with 2 blocks"):
            tiny_vit.resolve_block(bad)
    with pytest.raises(UnsupportedEncoderError, match="is a cnn"):
        tiny_cnn.resolve_block(0)


# ---------------------------------------------------------------------------------------- tokens
def test_batch_first_gives_the_same_tokens_in_both_layouts(tiny_vit, sequence_first_vit):
    images = _images()
    reference = _block_output(tiny_vit, images, 0)
    assert tiny_vit.batch_first(reference) is reference  # batch-first already: untouched
    raw = _block_output(sequence_first_vit, images, 0)
    tokens = sequence_first_vit.batch_first(raw)
    assert tokens.shape == (3, TOKENS, WIDTH)
    torch.testing.assert_close(tokens, reference, atol=1e-6, rtol=1e-5)
    assert torch.equal(sequence_first_vit.block_layout(tokens), raw)  # the inverse


def test_cls_token_is_the_first_token_and_the_embedding_reads_it(vit):
    images = _images()
    output = _block_output(vit, images, -1)
    cls = vit.cls_token(output)
    assert cls.shape == (3, WIDTH)
    torch.testing.assert_close(cls, vit.batch_first(output)[:, 0])
    with torch.no_grad():  # open_clip's 'tok' pooling: ln_post of the class token, then the projection
        embedding = F.normalize(vit.visual.ln_post(cls) @ vit.visual.proj, dim=-1)
        torch.testing.assert_close(embedding, vit(images), atol=1e-6, rtol=1e-5)


def test_cls_token_of_a_hand_built_sequence(tiny_vit, sequence_first_vit, tiny_cnn):
    tokens = torch.arange(2 * 5 * 3.0).reshape(2, 5, 3)  # B x N x C; token n of image b holds 15b + 3n + c
    expected = torch.tensor([[0.0, 1.0, 2.0], [15.0, 16.0, 17.0]])
    assert torch.equal(tiny_vit.cls_token(tokens), expected)
    assert torch.equal(sequence_first_vit.cls_token(tokens.transpose(0, 1)), expected)
    for layout_method in (tiny_cnn.cls_token, tiny_cnn.batch_first):
        with pytest.raises(UnsupportedEncoderError, match="'tiny-cnn' is a cnn"):
            layout_method(tokens)


def test_patch_slice_takes_the_last_grid_tokens(vit, tiny_cnn):
    assert vit.patch_slice(TOKENS) == slice(1, TOKENS)
    assert vit.patch_slice(20) == slice(4, 20)  # four prefix tokens (class + registers) before the grid
    with pytest.raises(UnsupportedEncoderError, match="16 tokens cannot hold a class token and a 4x4 patch grid"):
        vit.patch_slice(16)
    with pytest.raises(UnsupportedEncoderError, match="no patch grid"):
        tiny_cnn.patch_slice(TOKENS)


def test_token_grid_lays_patches_row_by_row(tiny_vit):
    values = torch.arange(2 * 16.0).reshape(2, 16)
    grid = tiny_vit.token_grid(values)
    assert grid.shape == (2, GRID, GRID)
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    assert torch.equal(grid[1], 16 + 4 * rows + cols)
    channels = torch.stack([values, -values], dim=-1)  # B x 16 x 2: trailing dimensions are kept
    assert torch.equal(tiny_vit.token_grid(channels), torch.stack([grid, -grid], dim=-1))


def test_to_spatial_puts_patch_token_r_c_at_grid_cell_r_c(vit):
    output = _block_output(vit, _images(), 0)
    spatial = vit.to_spatial(output)
    tokens = vit.batch_first(output)
    assert spatial.shape == (3, WIDTH, GRID, GRID)
    for r, c in ((0, 0), (1, 3), (3, 2)):
        assert torch.equal(spatial[:, :, r, c], tokens[:, 1 + GRID * r + c])


# ---------------------------------------------------------------------------------------- users of the layout
@pytest.mark.parametrize(
    "method",
    [
        AttentionMap,
        Rollout,
        GradECLIP,
        lambda: GradECLIP(blocks=2),
        GradCAM,
        lambda: GradCAM(block=0),
        lambda: M2IB(block=0, steps=2, samples=2),
    ],
    ids=["attention_map", "rollout", "grad_eclip", "grad_eclip-2", "gradcam", "gradcam-0", "m2ib-0"],
)
def test_maps_do_not_depend_on_the_token_layout(tiny_vit, sequence_first_vit, method):
    images = _images(2)
    target = TextTarget(F.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(1)), dim=-1))
    expected = method()(tiny_vit, images, target)
    assert expected.abs().max() > 0
    torch.testing.assert_close(method()(sequence_first_vit, images, target), expected, atol=1e-5, rtol=1e-4)


def test_neuron_readouts_do_not_depend_on_the_token_layout(tiny_vit, sequence_first_vit):
    images = _images()
    for layer in (LayerSpec("block", -1), LayerSpec("block", 0)):
        torch.testing.assert_close(
            neuron_activations(sequence_first_vit, images, layer),
            neuron_activations(tiny_vit, images, layer),
            atol=1e-6,
            rtol=1e-5,
        )
        torch.testing.assert_close(
            spatial_activations(sequence_first_vit, images, layer),
            spatial_activations(tiny_vit, images, layer),
            atol=1e-6,
            rtol=1e-5,
        )


# ---------------------------------------------------------------------------------------- tower tail (M2IB's cut)
@pytest.mark.parametrize("which", ["tiny_vit", "sequence_first_vit", "hf_vit", "timm_vit", "timm_avg_vit"])
@pytest.mark.parametrize("block", [0, 1])
def test_tail_after_a_block_finishes_the_towers_forward(which: str, block: int, request: pytest.FixtureRequest) -> None:
    """The block's output through ``tail_after`` is the tower's own embedding (with the class-token shortcut of the
    last block where the pooling allows it, and without it for average pooling)."""
    encoder = request.getfixturevalue(which)
    images = _images(2)
    tokens = encoder.batch_first(_block_output(encoder, images, block))
    with torch.no_grad():
        expected = encoder.visual(encoder.normalize(images))
        torch.testing.assert_close(encoder.tail_after(block)(tokens), expected, atol=2e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def timm_avg_vit() -> Encoder:
    import timm

    from aft_bench.models.backends.timm import TimmEncoder

    torch.manual_seed(4)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2,
                              num_classes=5, global_pool="avg", qk_norm=True)
    return TimmEncoder(model.eval(), "tiny-timm-avg-vit")
