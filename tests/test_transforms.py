import pytest
import torch
from PIL import Image

from actdistill.data.transforms import build_image_transform
from actdistill.errors import ActdistillError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("train", [True, False])
def test_shape_and_dtype(train):
    out = build_image_transform(train, 24, MEAN, STD)(_image())
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    assert type(out) is torch.Tensor  # a plain tensor, not a tv_tensors subclass


@pytest.mark.parametrize("train", [True, False])
def test_constant_image_is_normalised_per_channel(train):
    v = 100
    out = build_image_transform(train, 16, MEAN, STD)(torch.full((3, 30, 20), v, dtype=torch.uint8))
    expected = torch.tensor([(v / 255 - m) / s for m, s in zip(MEAN, STD)]).view(3, 1, 1).expand(3, 16, 16)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_train_is_random_and_test_is_deterministic():
    img = _image()
    torch.manual_seed(0)
    train = build_image_transform(True, 24, MEAN, STD)
    draws = [train(img) for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    test = build_image_transform(False, 24, MEAN, STD)
    assert torch.equal(test(img), test(img))


def test_flip_only_when_crop_covers_everything():
    # scale=(1, 1) on a square image makes the crop the identity, so every draw is the image or its mirror
    img = _image(20, 20)
    t = build_image_transform(True, 20, (0, 0, 0), (1, 1, 1), scale=(1.0, 1.0))
    ref = img.float() / 255
    torch.manual_seed(1)
    seen = set()
    for _ in range(12):
        out = t(img)
        flipped = torch.allclose(out, ref.flip(-1))
        assert flipped or torch.allclose(out, ref)
        seen.add(flipped)
    assert seen == {True, False}


def test_test_transform_resizes_without_cropping():
    img = torch.zeros(3, 40, 80, dtype=torch.uint8)
    img[:, :, 40:] = 255  # right half white survives a plain resize to a square
    out = build_image_transform(False, 8, (0, 0, 0), (1, 1, 1))(img)
    assert out[:, :, :3].max() < 0.05 and out[:, :, 5:].min() > 0.95


def test_accepts_pil_and_has_readable_repr():
    t = build_image_transform(False, 12, MEAN, STD)
    out = t(Image.new("RGB", (30, 20), (10, 20, 30)))
    assert out.shape == (3, 12, 12)
    assert "test" in repr(t) and "size=12" in repr(t)
    assert "RandomResizedCrop" in repr(build_image_transform(True, 12, MEAN, STD))


@pytest.mark.parametrize(
    "kwargs",
    [dict(size=0), dict(std=(0.2, 0.0, 0.2)), dict(mean=(0.5, 0.5)), dict(scale=(0.5, 0.1))],
)
def test_bad_arguments_raise_user_errors(kwargs):
    args = dict(train=True, size=8, mean=MEAN, std=STD) | kwargs
    with pytest.raises(ActdistillError):
        build_image_transform(**args)
