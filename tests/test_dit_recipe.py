"""The DiT recipe's pieces (issue 32, tools/dit_recipe.py) on tiny tensors and tiny real models."""

from __future__ import annotations

import pytest
import torch

from tools.dit_recipe import LdmFeatures, Repa, flow_weights


def test_flow_weights_average_one_and_lean_where_asked():
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95])
    assert torch.equal(flow_weights(t, "none"), torch.ones(5))
    for kind in ("min-snr", "low-noise"):
        w = flow_weights(t, kind)
        assert w.mean().item() == pytest.approx(1.0) and (w > 0).all()
    low = flow_weights(t, "low-noise")
    assert (low[:-1] > low[1:]).all()  # more weight where little noise is left
    # min-SNR-5 on the velocity loss: min((1 - t)^2, 5 t^2), i.e. min(SNR, 5) on the x0 loss
    raw = torch.minimum((1 - t) ** 2, 5 * t ** 2)
    assert torch.allclose(flow_weights(t, "min-snr"), raw / raw.mean())
    snr = ((1 - t) / t) ** 2
    assert torch.allclose(raw / t ** 2, torch.minimum(snr, torch.tensor(5.0)))
    with pytest.raises(ValueError, match="unknown weighting"):
        flow_weights(t, "cosine")


def tiny_dit():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                 caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=8)


def test_repa_aligns_the_chosen_blocks_tokens_and_trains_the_block_and_the_projector():
    torch.manual_seed(0)
    dit = tiny_dit()
    repa = Repa(dit, block=0, target_channels=6)
    x, ctx, pooled = torch.randn(3, 4, 8, 8), torch.randn(3, 5, 16), torch.randn(3, 16)
    target = torch.randn(3, 16, 6)  # 4 x 4 tokens of patch 2 on 8 x 8 latents
    with pytest.raises(RuntimeError, match="no DiT forward"):
        repa.loss(target)
    opt = torch.optim.Adam([*dit.parameters(), *repa.parameters()], lr=1e-2)
    first = None
    for _ in range(30):
        dit(x, ctx, pooled, torch.full((3,), 500.0))
        loss = repa.loss(target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        assert dit.transformer_blocks[0].attn.to_q.weight.grad.abs().sum() > 0  # it reaches the DiT's block
        assert dit.transformer_blocks[1].attn.to_q.weight.grad is None  # not the blocks after it
        opt.step()
    assert 0 < first and loss.item() < 0.5 * first  # 1 - cosine, falling as the tokens align
    assert (1 - torch.nn.functional.cosine_similarity(target, target, dim=-1)).abs().max() < 1e-6


def test_ldm_features_are_frozen_and_land_on_the_token_grid():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16, 16), norm_num_groups=4, cross_attention_dim=12,
                                attention_head_dim=2,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    empty = torch.randn(1, 7, 12)
    for layer, channels in (("down1", 16), ("mid", 16), ("down0", 8)):
        features = LdmFeatures(unet, empty, layer)
        latents = torch.randn(2, 4, 16, 16)
        out = features(latents, grid=8)
        assert out.shape == (2, 64, channels) and features.channels == channels and not out.requires_grad
        assert torch.equal(out, features(latents, grid=8))  # the same picture, the same target
        assert not torch.allclose(out[0], out[1])  # and another picture, another target
    assert not any(p.requires_grad for p in unet.parameters())
