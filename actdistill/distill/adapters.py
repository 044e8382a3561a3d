"""Bridges between a student feature and a teacher feature of other shapes (FitNets, AT, MGD, SimKD, etc.).

Layouts a tap can produce: `(B, C)` vectors, `(B, N, C)` token sequences, `(B, C, H, W)` image maps and
`(B, C, T, H, W)` video maps. `build_adapter(student_shape, teacher_shape)` plans, once, how to bring a pair to a
common layout and returns a `FeatureAdapter` whose `forward(f_s, f_t)` returns `(s, t)` of equal shape (or of equal
layout with `resize="none"`/`project="never"`):

1. tokens → map: `(B, N, C) → (B, C, √N, √N)`, dropping one leading class token when N−1 is a square and N is not;
   two non-square sequences of the same length become `(B, C, N, 1)` columns;
2. a per-frame student `(B·T, C, H, W)` paired with a `(B, …)` teacher is folded into `(B, C, T, H, W)`;
3. rank: a 5-D student against a 4-D teacher is mean-pooled over time; a 4-D student against a 5-D teacher either
   pools the teacher's time (`time="pool"`, default) or gets a time axis of 1 that the resize step tiles to the
   teacher's T (`time="tile"`); a map against a vector is global-average-pooled;
4. projection (the only trainable part): a 1×1 / 1×1×1 conv (Linear for vectors) from C_s to C_t, when channels
   differ (`project="auto"`), always (`"always"`, FitNets' regressor) or never (`"never"`, AT);
5. size (`resize`): `"teacher"` resizes the student to the teacher's T×H×W (adaptive average pooling when shrinking
   every dim, else bi/trilinear interpolation); `"min"` adaptive-pools both to the smaller extent per dim; `"none"`.

Steps 1-3 and 5 are parameter-free and take their sizes from the tensors at run time; only ranks, channel counts
and the token layout are fixed by the shapes given at construction. Adapters live in the method, never in the
exported student.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.errors import ActdistillError

Project = Literal["auto", "always", "never"]
Resize = Literal["teacher", "min", "none"]
Time = Literal["pool", "tile"]


def square_side(n: int) -> int | None:
    """√n when n is a positive perfect square, else None."""
    side = math.isqrt(n) if n > 0 else 0
    return side if side > 0 and side * side == n else None


def tokens_to_map(x: Tensor, layout: str = "auto") -> Tensor:
    """`(B, N, C)` tokens → `(B, C, h, w)` map.

    `layout`: "square" (N = h², all tokens), "cls" (N − 1 = h², the first token dropped), "column" (`(B, C, N, 1)`)
    or "auto" (square, else cls). Raises ActdistillError when the sequence cannot be laid out.
    """
    b, n, c = x.shape
    if layout == "auto":
        layout = "square" if square_side(n) else "cls" if square_side(n - 1) else ""
    if layout == "column":
        return x.transpose(1, 2).unsqueeze(-1)
    if layout == "cls":
        x, n = x[:, 1:], n - 1
    side = square_side(n) if layout in ("square", "cls") else None
    if side is None:
        raise ActdistillError(f"cannot lay out tokens {tuple(x.shape)} as a square map (N or N-1 must be a square)")
    return x.transpose(1, 2).reshape(b, c, side, side)


def map_to_tokens(x: Tensor) -> Tensor:
    """`(B, C, H, W)` or `(B, C, T, H, W)` → `(B, N, C)` tokens, N = (T·)H·W in row-major order."""
    return x.flatten(2).transpose(1, 2)


def global_pool(x: Tensor) -> Tensor:
    """Global average over every non-channel position: maps `(B, C, …)` and tokens `(B, N, C)` → `(B, C)`."""
    if x.dim() == 2:
        return x
    if x.dim() == 3:
        return x.mean(dim=1)
    return x.flatten(2).mean(dim=-1)


def channels_of(shape: tuple[int, ...]) -> int:
    """Channel count of a tap shape: the last dim of tokens `(B, N, C)`, else dim 1."""
    return shape[2] if len(shape) == 3 else shape[1]


def resize_to(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize the trailing (T,) H, W dims of `x` to `size`: adaptive avg pooling if no dim grows, else interpolation."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if all(a >= b for a, b in zip(x.shape[2:], size)):
        return (F.adaptive_avg_pool2d if x.dim() == 4 else F.adaptive_avg_pool3d)(x, size)
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


@dataclass(frozen=True)
class Plan:
    """How `FeatureAdapter` aligns a pair; built by `plan_pair` from example shapes (batch dim included)."""

    student_tokens: str = ""  # "", "square", "cls", "column"
    teacher_tokens: str = ""
    fold: bool = False  # (B·T, C, H, W) student → (B, C, T, H, W)
    student_time_pool: bool = False
    teacher_time_pool: bool = False
    tile: bool = False
    student_vector: bool = False
    teacher_vector: bool = False
    rank: int = 4  # rank of both sides after the plan: 2, 4 or 5
    student_channels: int = 0
    teacher_channels: int = 0


def _token_layout(n: int, other: tuple[int, ...]) -> str:
    if len(other) == 3 and other[1] == n and not square_side(n):
        return "column"
    if square_side(n):
        return "square"
    return "cls" if square_side(n - 1) else ""


def plan_pair(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], time: Time = "pool") -> Plan:
    """The alignment steps (module docstring) for example shapes; ActdistillError naming both shapes if none works."""
    s_shape, t_shape = tuple(student_shape), tuple(teacher_shape)

    def fail(reason: str) -> ActdistillError:
        return ActdistillError(f"no adapter bridges student feature {s_shape} and teacher feature {t_shape}: {reason}")

    if time not in ("pool", "tile"):
        raise ActdistillError(f"adapter time must be 'pool' or 'tile', got {time!r}")
    for shape in (s_shape, t_shape):
        if len(shape) not in (2, 3, 4, 5):
            raise fail("each side must be (B, C), (B, N, C), (B, C, H, W) or (B, C, T, H, W)")
    ranks, layouts = [], []
    for shape, other in ((s_shape, t_shape), (t_shape, s_shape)):
        layout = ""
        if len(shape) == 3 and len(other) != 2:
            layout = _token_layout(shape[1], other)
            if not layout:
                raise fail(f"{shape[1]} tokens (nor {shape[1]}-1) do not form a square map")
        layouts.append(layout)
        ranks.append(4 if layout else len(shape))
    rs, rt = ranks
    s_batch, t_batch = s_shape[0], t_shape[0]
    fold = False
    if s_batch != t_batch:
        if rs == 4 and s_batch % t_batch == 0:
            fold, rs = True, 5
        else:
            raise fail(f"batch sizes {s_batch} and {t_batch} differ")
    plan: dict[str, bool | str] = dict(student_tokens=layouts[0], teacher_tokens=layouts[1], fold=fold)
    if 2 in (rs, rt):
        rank = 2
        plan.update(student_vector=rs != 2, teacher_vector=rt != 2)
    elif rs == rt:
        rank = rs
    elif rs == 5:
        rank, plan["student_time_pool"] = 4, True
    elif time == "pool":
        rank, plan["teacher_time_pool"] = 4, True
    else:
        rank, plan["tile"] = 5, True
    return Plan(**plan, rank=rank, student_channels=channels_of(s_shape), teacher_channels=channels_of(t_shape))


class FeatureAdapter(nn.Module):
    """Aligns a student feature to a teacher feature (module docstring): `forward(f_s, f_t) -> (s, t)`.

    `s` has C_t channels unless `project="never"`; with `resize="teacher"` it has exactly `t`'s shape. Only the
    projection is trainable. `out_rank` (2, 4 or 5) and `out_channels` describe `s`.
    """

    def __init__(self, plan: Plan, *, project: Project = "auto", resize: Resize = "teacher") -> None:
        super().__init__()
        if project not in ("auto", "always", "never"):
            raise ActdistillError(f"adapter project must be 'auto', 'always' or 'never', got {project!r}")
        if resize not in ("teacher", "min", "none"):
            raise ActdistillError(f"adapter resize must be 'teacher', 'min' or 'none', got {resize!r}")
        self.plan, self.resize = plan, resize
        c_s, c_t = plan.student_channels, plan.teacher_channels
        self.proj: nn.Module | None = None
        if project == "always" or (project == "auto" and c_s != c_t):
            layer = {2: nn.Linear, 4: nn.Conv2d, 5: nn.Conv3d}[plan.rank]
            self.proj = layer(c_s, c_t) if plan.rank == 2 else layer(c_s, c_t, kernel_size=1)
        self.out_rank = plan.rank
        self.out_channels = c_t if self.proj is not None else c_s

    def student_layout(self, x: Tensor, teacher_batch: int | None = None) -> Tensor:
        """Steps 1-4 on the student side (no resize): tokens, fold (needs `teacher_batch`), rank, projection."""
        p = self.plan
        if p.student_tokens:
            x = tokens_to_map(x, p.student_tokens)
        if p.fold and teacher_batch is not None:
            x = x.reshape(teacher_batch, x.shape[0] // teacher_batch, *x.shape[1:]).transpose(1, 2)
        if p.student_vector:
            x = global_pool(x)
        if p.student_time_pool:
            x = x.mean(dim=2)
        if p.tile:
            x = x.unsqueeze(2)
        return x if self.proj is None else self.proj(x)

    def teacher_layout(self, t: Tensor) -> Tensor:
        """Parameter-free steps on the teacher side: tokens → map, time pooling or vector pooling."""
        p = self.plan
        if p.teacher_tokens:
            t = tokens_to_map(t, p.teacher_tokens)
        if p.teacher_vector:
            return global_pool(t)
        return t.mean(dim=2) if p.teacher_time_pool else t

    def forward(self, feat_s: Tensor, feat_t: Tensor) -> tuple[Tensor, Tensor]:
        """`(student, teacher)` features in any supported layout → aligned `(s, t)`."""
        t = self.teacher_layout(feat_t)
        s = self.student_layout(feat_s, feat_t.shape[0])
        if s.dim() != t.dim():
            raise ActdistillError(
                f"adapter planned for rank {self.out_rank} got student {tuple(feat_s.shape)} and teacher "
                f"{tuple(feat_t.shape)}; the taps changed layout since the method was built"
            )
        if s.dim() > 2 and self.resize == "teacher":
            s = resize_to(s, tuple(t.shape[2:]))
        elif s.dim() > 2 and self.resize == "min":
            size = tuple(min(a, b) for a, b in zip(s.shape[2:], t.shape[2:]))
            s, t = resize_to(s, size), resize_to(t, size)
        return s, t


def build_adapter(
    student_shape: tuple[int, ...],
    teacher_shape: tuple[int, ...],
    *,
    project: Project = "auto",
    resize: Resize = "teacher",
    time: Time = "pool",
) -> FeatureAdapter:
    """A `FeatureAdapter` for features shaped like the examples `student_shape` / `teacher_shape` (batch included).

    E.g. `(1, 160, 2, 2)` vs `(1, 256, 4, 4)` → Conv2d 1×1 160→256 and bilinear upsampling; `(1, 65, 64)` tokens vs
    `(1, 128, 4, 8, 8)` → drop the class token, 8×8 map, pool the teacher's time, Conv2d 1×1 64→128. Raises
    ActdistillError naming both shapes when no plan exists (e.g. 50 tokens against a 5-D map).
    """
    return FeatureAdapter(plan_pair(student_shape, teacher_shape, time), project=project, resize=resize)
