"""Fast-path switches reach the models: `train.compile` compiles student and teacher, `train.channels_last` converts."""

import torch
from conftest import TINY_RUN

import actdistill.engine.build as build_module
import actdistill.engine.fit as fit_module
from actdistill.config import load_config


def test_compile_and_channels_last_reach_student_and_teacher(tiny_stanford40, tmp_path, monkeypatch):
    teacher_run = tmp_path / "teacher"
    base = [*TINY_RUN, f"data.root={tiny_stanford40}"]
    fit_module.fit(load_config(None, [*base, "student.name=resnet_demo", f"train.out_dir={teacher_run}"]))

    compiled, built = [], []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    create = build_module.create_model  # build_run creates the student first, then the teacher

    def recording_create(*args, **kwargs):
        built.append(create(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(build_module, "create_model", recording_create)
    kd = [*base, "student.name=resnet_demo", "method.name=kd", f"teacher.checkpoint={teacher_run}/checkpoints/last.pt"]
    fit_module.fit(
        load_config(None, [*kd, "train.compile=true", "train.channels_last=true", f"train.out_dir={tmp_path / 's'}"])
    )
    assert len(compiled) == 2  # the student and the teacher
    assert len(built) == 2
    student = built[0]
    conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
