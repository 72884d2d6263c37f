"""`llm4seg convert --faithful` of a reference-layout state dict reproduces the reference network's logits.

The reference-style CMUNeXt below is written from the published architecture (stem conv block, CMUNeXt blocks
of depth-wise k×k residual + inverted bottleneck, max-pool encoder, bilinear up-conv decoder with grouped
fusion convs), with the reference's parameter names, so its state dict is what a user would bring.
"""
from __future__ import annotations

import torch
from torch import nn

from llm4seg.checkpoint import load_checkpoint
from llm4seg.cli import main

DIMS, DEPTHS, KERNELS = (16, 32, 128, 160, 256), (1, 1, 1, 3, 1), (3, 3, 7, 7, 7)


def conv_bn_relu(cin: int, cout: int) -> nn.Module:
    block = nn.Module()
    block.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
    block.forward = lambda x: block.conv(x)
    return block


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int, k: int) -> None:
        super().__init__()
        self.block = nn.Sequential(*[nn.Sequential(
            Residual(nn.Sequential(nn.Conv2d(cin, cin, k, groups=cin, padding=k // 2), nn.GELU(), nn.BatchNorm2d(cin))),
            nn.Conv2d(cin, cin * 4, 1), nn.GELU(), nn.BatchNorm2d(cin * 4),
            nn.Conv2d(cin * 4, cin, 1), nn.GELU(), nn.BatchNorm2d(cin)) for _ in range(depth)])
        self.up = conv_bn_relu(cin, cout)

    def forward(self, x):
        return self.up(self.block(x))


class Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, cout, 3, padding=1),
                                nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x):
        return self.up(x)


class Fusion(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=2), nn.GELU(), nn.BatchNorm2d(cin),
                                  nn.Conv2d(cin, cout * 4, 1), nn.GELU(), nn.BatchNorm2d(cout * 4),
                                  nn.Conv2d(cout * 4, cout, 1), nn.GELU(), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.conv(x)


class ReferenceCMUNeXt(nn.Module):
    def __init__(self, cin: int = 3) -> None:
        super().__init__()
        d = DIMS
        self.Maxpool = nn.MaxPool2d(2, 2)
        self.stem = conv_bn_relu(cin, d[0])
        for i, (a, b) in enumerate(zip((d[0], d[0], d[1], d[2], d[3]), d), start=1):
            setattr(self, f"encoder{i}", Block(a, b, DEPTHS[i - 1], KERNELS[i - 1]))
        for i in (5, 4, 3, 2):
            setattr(self, f"Up{i}", Up(d[i - 1], d[i - 2]))
            setattr(self, f"Up_conv{i}", Fusion(d[i - 2] * 2, d[i - 2]))
        self.Conv_1x1 = nn.Conv2d(d[0], 1, 1)

    def forward(self, x):
        skips = [self.encoder1(self.stem(x))]
        for i in (2, 3, 4, 5):
            skips.append(getattr(self, f"encoder{i}")(self.Maxpool(skips[-1])))
        d = skips.pop()
        for i in (5, 4, 3, 2):
            d = getattr(self, f"Up_conv{i}")(torch.cat((skips.pop(), getattr(self, f"Up{i}")(d)), dim=1))
        return self.Conv_1x1(d)


def test_convert_faithful_reproduces_the_reference_logits(tmp_path):
    torch.manual_seed(0)
    ref = ReferenceCMUNeXt()
    with torch.no_grad():  # trained-looking BatchNorms, so every fold is exercised and the logits vary
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.5, 3.0)
                m.bias.uniform_(-0.5, 0.5)
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "ref.pth")
    out = tmp_path / "ref.safetensors"
    assert main(["convert", str(tmp_path / "ref.pth"), "--out", str(out), "--llm", "none", "--faithful"]) == 0
    model = load_checkpoint(out, device="cpu")
    assert model.config.upsample == "bilinear"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert float(expected.std()) > 0.5  # logits that vary over the image: a meaningful comparison
    assert float((got - expected).abs().max()) < 1e-4
    from llm4seg.fastpath import prepare_for_inference

    with torch.no_grad():  # and the fast path of the converted model agrees too
        assert float((prepare_for_inference(model)(x) - expected).abs().max()) < 1e-4

    nearest = tmp_path / "nearest.safetensors"  # without --faithful the outputs differ: the option matters
    assert main(["convert", str(tmp_path / "ref.pth"), "--out", str(nearest), "--llm", "none"]) == 0
    with torch.no_grad():
        assert float((load_checkpoint(nearest, device="cpu")(x) - expected).abs().max()) > 0.1
