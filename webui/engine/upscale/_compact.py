"""Real-ESRGAN's compact net, Kiri's own reader of it (see _models.py): imports torch, so it is
imported only when an upscaler file is loaded."""

from __future__ import annotations

import torch


class SRVGGNetCompact(torch.nn.Module):
    """Real-ESRGAN's compact net (xinntao, BSD-3): convs with PReLU at low resolution, a pixel
    shuffle, plus the nearest-upsampled input. Same layout and key names as spandrel's."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16, upscale: int = 4):
        super().__init__()
        self.upscale = upscale
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), torch.nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [torch.nn.Conv2d(num_feat, num_feat, 3, 1, 1), torch.nn.PReLU(num_parameters=num_feat)]
        layers.append(torch.nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = torch.nn.ModuleList(layers)
        self.upsampler = torch.nn.PixelShuffle(upscale)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + torch.nn.functional.interpolate(x, scale_factor=self.upscale, mode="nearest")
