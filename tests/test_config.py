"""Config: YAML + overrides, unknown keys rejected with suggestions, type coercion, round trip."""

from __future__ import annotations

import pytest
import yaml

from actdistill.config import Config, SchedConfig, config_from_dict, load_config, parse_overrides, save_config
from actdistill.engine.optim import lr_factor
from actdistill.errors import ActdistillError


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["optim.lr=0.01", "train.epochs=3", "method.name=kd", "data.crop_person=true"]) == {
        "optim": {"lr": 0.01},
        "train": {"epochs": 3},
        "method": {"name": "kd"},
        "data": {"crop_person": True},
    }


def test_load_yaml_then_override(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\noptim:\n  lr: 1e-3\nmethod:\n  name: kd\n  temperature: 11\n")
    cfg = load_config(path, ["method.temperature=4", "train.epochs=2"])
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads "1e-3" as a string: coerced to float
    assert cfg.method == {"name": "kd", "temperature": 4}
    assert cfg.train.epochs == 2


def test_unknown_key_suggests(tmp_path):
    with pytest.raises(ActdistillError, match=r"unknown key 'optim.learning_rate'.*Valid keys"):
        config_from_dict({"optim": {"learning_rate": 0.1}})
    with pytest.raises(ActdistillError, match=r"unknown key 'train.epoch'.*Did you mean: epochs"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ActdistillError, match=r"unknown section 'optimizer'.*Did you mean: optim"):
        config_from_dict({"optimizer": {"lr": 0.1}})


def test_bad_type_and_missing_file(tmp_path):
    with pytest.raises(ActdistillError, match="'train.epochs' must be int"):
        config_from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ActdistillError, match="nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ActdistillError, match="section.key=value"):
        parse_overrides(["epochs"])


def test_save_round_trip(tmp_path):
    cfg = load_config(None, ["optim.lr=0.05", "method.name=kd", "method.alpha=0.3", "student.name=x"])
    save_config(cfg, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg
    assert isinstance(again, Config)


def test_paper1_step_schedules():
    """Paper 1, §III-A: teacher StepLR(10, 0.1) over 50 epochs; students StepLR(5, 0.3) over 15."""
    teacher = [1e-3 * lr_factor(e, SchedConfig(name="step", step_size=10, gamma=0.1), 50) for e in range(50)]
    assert teacher[0] == teacher[9] == pytest.approx(1e-3)
    assert (
        teacher[10] == pytest.approx(1e-4) and teacher[40] == pytest.approx(1e-7) and teacher[49] == pytest.approx(1e-7)
    )
    student = [1e-3 * lr_factor(e, SchedConfig(name="step", step_size=5, gamma=0.3), 15) for e in range(15)]
    assert student[:5] == [pytest.approx(1e-3)] * 5
    assert student[5] == pytest.approx(3e-4) and student[14] == pytest.approx(9e-5)


def test_cosine_with_warmup():
    cfg = SchedConfig(name="cosine", warmup_epochs=2)
    factors = [lr_factor(e, cfg, 10) for e in range(10)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert factors[2] == pytest.approx(1.0) and factors[-1] < 0.05
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
