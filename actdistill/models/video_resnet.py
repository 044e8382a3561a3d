"""Video ResNets: PCL's R3D-10 and R(2+1)D-10, and torchvision's r3d_18 / mc3_18 / r2plus1d_18 wrapped.

The -10 networks follow PCL's released code (`models/r3d.py`, `models/r21d.py`). All map a clip `(B, C, T, H, W)`
to logits `(B, K)`; stages are `stem`, `layer1`..`layer4`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import FeatureInfo
from actdistill.models.inflate import cross_modality, load_adapted, read_state_dict
from actdistill.models.two_stream import modality_cfg

# torchvision's Kinetics-400 video presets (`torchvision/transforms/_presets.py::VideoClassification`).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def mid_channels(cin: int, cout: int, kt: int, k: int) -> int:
    """(2+1)D mid width ⌊kt·k²·Cin·Cout / (k²·Cin + kt·Cout)⌋, matching the 3D conv's parameters (Tran 2018 §3.5)."""
    return math.floor(kt * k * k * cin * cout / (k * k * cin + kt * cout))


class Conv2Plus1d(nn.Sequential):
    """Factorised conv: 1×k×k spatial → BN → ReLU → kt×1×1 temporal; `(B, Cin, T, H, W)` → `(B, Cout, T', H', W')`."""

    def __init__(
        self, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
    ) -> None:
        kt, k, _ = kernel
        mid = mid_channels(cin, cout, kt, k)
        super().__init__(
            nn.Conv3d(cin, mid, (1, k, k), (1, stride[1], stride[2]), (0, padding[1], padding[2]), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (kt, 1, 1), (stride[0], 1, 1), (padding[0], 0, 0), bias=False),
        )


def _conv3d(cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> nn.Module:
    return nn.Conv3d(cin, cout, tuple(kernel), tuple(stride), tuple(padding), bias=False)


ConvMaker = Callable[[int, int, Sequence[int], Sequence[int], Sequence[int]], nn.Module]
CONVS: dict[str, ConvMaker] = {"3d": _conv3d, "2plus1d": Conv2Plus1d}


class ResBlock(nn.Module):
    """Basic residual block conv→BN→ReLU→conv→BN (+ shortcut) → ReLU; stride 2 in T, H, W when `downsample`."""

    def __init__(self, cin: int, cout: int, conv: ConvMaker, downsample: bool) -> None:
        super().__init__()
        s = (2, 2, 2) if downsample else (1, 1, 1)
        self.conv1 = conv(cin, cout, (3, 3, 3), s, (1, 1, 1))
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = conv(cout, cout, (3, 3, 3), (1, 1, 1), (1, 1, 1))
        self.bn2 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        # PCL's shortcut is a strided 1×1×1 conv of the same kind (factorised too in R(2+1)D) followed by BN.
        self.shortcut = (
            nn.Sequential(conv(cin, cout, (1, 1, 1), (2, 2, 2), (0, 0, 0)), nn.BatchNorm3d(cout))
            if downsample
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        res = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(self.shortcut(x) + res)


class PCLResNet(nn.Module):
    """PCL's R3D / R(2+1)D (`layers=(1,1,1,1)`: the 10-layer nets of P3); `(B, C, T, H, W)` → logits `(B, K)`.

    Stem 3×7×7 stride (1,2,2) (no max-pool), four stages of `layers[i]` basic blocks with widths 64..512, stages 2-4
    downsample by 2 in T, H and W; head AdaptiveAvgPool3d(1) → Linear(512, K). `conv="2plus1d"` factorises every conv.
    """

    def __init__(
        self,
        num_classes: int = 101,
        in_channels: int = 3,
        conv: str = "3d",
        layers: Sequence[int] = (1, 1, 1, 1),
        channel_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if conv not in CONVS:
            raise ActdistillError(f"unknown conv '{conv}'; use one of {sorted(CONVS)}")
        if channel_scale <= 0:
            raise ActdistillError(f"channel_scale must be > 0, got {channel_scale}")
        make = CONVS[conv]
        widths = [max(1, round(w * channel_scale)) for w in (64, 128, 256, 512)]
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            make(in_channels, widths[0], (3, 7, 7), (1, 2, 2), (1, 3, 3)), nn.BatchNorm3d(widths[0]), nn.ReLU(True)
        )
        self.feature_info = [FeatureInfo("stem", widths[0], 2, 1)]
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, layers, strict=True), start=1):
            blocks = [ResBlock(cin if j == 0 else w, w, make, downsample=(i > 1 and j == 0)) for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            cin = w
            self.feature_info.append(FeatureInfo(f"layer{i}", w, 2**i, 2 ** (i - 1)))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.pretrained_cfg = modality_cfg(in_channels, 16, 112)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage maps `(B, C, T, H, W)`: stem, layer1..layer4 (512×2×7×7 last for 16×112²)."""
        feats = [self.stem(x)]
        for i in range(1, 5):
            feats.append(getattr(self, f"layer{i}")(feats[-1]))
        return feats

    def get_classifier(self) -> nn.Module:
        """The final Linear (timm convention; lets loaders find the head)."""
        return self.fc

    def forward_head(self, feature: Tensor) -> Tensor:
        """layer4 map `(B, 512, T, H, W)` → logits `(B, K)`."""
        return self.fc(self.pool(feature).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → logits `(B, K)`."""
        return self.forward_head(self.forward_features(x)[-1])


def _load_own(model: nn.Module, pretrained: bool | str, name: str, first_conv: str) -> nn.Module:
    if pretrained is True:
        raise ActdistillError(
            f"{name} has no downloadable weights; set student.pretrained (or teacher.pretrained) to a {name} "
            "state dict file"
        )
    if pretrained:
        load_adapted(
            model,
            read_state_dict(pretrained),
            head=("fc.weight", "fc.bias"),
            first_conv=first_conv,
            source=str(pretrained),
        )
    return model


def r3d_10(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> PCLResNet:
    """R3D-10 (P3 backbone, PCL `R3DNet((1,1,1,1))`); `(B, 3, 16, 112, 112)` → `(B, K)`."""
    return _load_own(PCLResNet(num_classes, conv="3d", **kwargs), pretrained, "r3d_10", "stem.0.weight")


def r2plus1d_10(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> PCLResNet:
    """R(2+1)D-10 (P3 backbone, PCL `R2Plus1DNet((1,1,1,1))`); `(B, 3, 16, 112, 112)` → `(B, K)`."""
    return _load_own(PCLResNet(num_classes, conv="2plus1d", **kwargs), pretrained, "r2plus1d_10", "stem.0.0.weight")


# Temporal stride of stem, layer1..layer4: mc3_18 only convolves over time in layer1 (Tran et al. 2018, "MC3").
_TV_TEMPORAL = {"r3d_18": (1, 1, 2, 4, 8), "mc3_18": (1, 1, 1, 1, 1), "r2plus1d_18": (1, 1, 2, 4, 8)}


class TorchvisionVideoResNet(nn.Module):
    """Contract adapter around torchvision's `r3d_18` / `mc3_18` / `r2plus1d_18`; `(B, C, T, H, W)` → `(B, K)`.

    The torchvision modules are reused as they are (state-dict keys stay torchvision's: `stem.*`, `layer1.*`, `fc.*`).
    `pretrained=True` downloads torchvision's Kinetics-400 weights (`weights="KINETICS400_V1"`); a path loads a
    torchvision-layout state dict. A class count other than 400 re-initialises `fc`; `in_channels` other than 3
    replaces the first stem conv (channel-averaged RGB kernel when pretrained).
    """

    def __init__(self, arch: str, num_classes: int = 101, in_channels: int = 3, pretrained: bool | str = False) -> None:
        super().__init__()
        import torchvision.models.video as tv_video

        if arch not in _TV_TEMPORAL:
            raise ActdistillError(f"unknown torchvision video model '{arch}'; use one of {sorted(_TV_TEMPORAL)}")
        builder = getattr(tv_video, arch)
        if pretrained is True:
            try:
                net = builder(weights="KINETICS400_V1")
            except Exception as err:  # download or hash failure, typically offline
                raise ActdistillError(
                    f"could not fetch torchvision's Kinetics-400 weights for {arch} ({type(err).__name__}); download "
                    f"them where there is internet and set student.pretrained (or teacher.pretrained) to that .pth file"
                ) from err
            if num_classes != 400:
                warnings.warn(
                    f"{arch}: Kinetics head (400 classes) replaced by a new {num_classes}-way fc", stacklevel=2
                )
                net.fc = nn.Linear(net.fc.in_features, num_classes)
        else:
            net = builder(weights=None, num_classes=num_classes)
        if in_channels != 3:
            old = net.stem[0]
            new = nn.Conv3d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
            if pretrained is True:
                new.weight.data.copy_(cross_modality(old.weight.data, in_channels))
            net.stem[0] = new
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.stem,
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.avgpool, self.fc = net.avgpool, net.fc
        self.arch, self.num_classes = arch, num_classes
        strides, channels = (2, 2, 4, 8, 16), (64, 64, 128, 256, 512)
        names = ("stem", "layer1", "layer2", "layer3", "layer4")
        self.feature_info = [
            FeatureInfo(n, c, s, t) for n, c, s, t in zip(names, channels, strides, _TV_TEMPORAL[arch], strict=True)
        ]
        self.pretrained_cfg = modality_cfg(in_channels, 16, 112, KINETICS_MEAN, KINETICS_STD)
        if pretrained and pretrained is not True:
            load_adapted(
                self,
                read_state_dict(pretrained),
                head=("fc.weight", "fc.bias"),
                first_conv="stem.0.weight",
                source=str(pretrained),
            )

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage maps `(B, C, T, H, W)`: stem, layer1..layer4."""
        feats = [self.stem(x)]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            feats.append(layer(feats[-1]))
        return feats

    def get_classifier(self) -> nn.Module:
        """The final Linear (timm convention; lets loaders find the head)."""
        return self.fc

    def forward_head(self, feature: Tensor) -> Tensor:
        """layer4 map `(B, 512, T, H, W)` → logits `(B, K)`."""
        return self.fc(self.avgpool(feature).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → logits `(B, K)`."""
        return self.forward_head(self.forward_features(x)[-1])


def r3d_18(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> TorchvisionVideoResNet:
    """torchvision R3D-18; `(B, 3, 16, 112, 112)` → `(B, K)`."""
    return TorchvisionVideoResNet("r3d_18", num_classes, pretrained=pretrained, **kwargs)


def mc3_18(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> TorchvisionVideoResNet:
    """torchvision MC3-18; `(B, 3, 16, 112, 112)` → `(B, K)`."""
    return TorchvisionVideoResNet("mc3_18", num_classes, pretrained=pretrained, **kwargs)


def r2plus1d_18(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> TorchvisionVideoResNet:
    """torchvision R(2+1)D-18; `(B, 3, 16, 112, 112)` → `(B, K)`."""
    return TorchvisionVideoResNet("r2plus1d_18", num_classes, pretrained=pretrained, **kwargs)
