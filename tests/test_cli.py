"""The command line: listing, one-line errors naming the problem and the fix, data synthesis."""

from __future__ import annotations

from pathlib import Path

import pytest

from actdistill.cli import main


def test_list_models_shows_paper1_names(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name in (
        "convnext_small",
        "swinv2_cr_tiny_ns_224",
        "twins_svt_small",
        "mvitv2_tiny",
        "convit_small",
        "pvt_v2_b2_li",
        "convnext_demo",
        "pvt_v2_demo",
    ):
        assert name in out
    assert "PVT-v2" in out and "ConvNeXt" in out


def test_list_methods_and_datasets(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "vanilla" in out and "kd" in out and "Hinton" in out
    assert main(["list", "datasets"]) == 0
    assert "stanford40" in capsys.readouterr().out


def _errors(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.fixture
def synth_root(tmp_path):
    """A tiny dataset written through the CLI (`data synth`), as a user would."""
    root = tmp_path / "d"
    argv = ["data", "synth", "--out", str(root), "--classes", "2", "--train-per-class", "2", "--test-per-class", "1"]
    assert main([*argv, "--size", "32"]) == 0
    return root


def test_unknown_model_is_one_line_with_suggestion(capsys, tmp_path, synth_root):
    code, err = _errors(
        capsys, ["train", f"data.root={synth_root}", "student.name=convnxt_demo", f"train.out_dir={tmp_path / 'run'}"]
    )
    assert code == 2
    assert len([line for line in err if line.startswith("actdistill: error:")]) == 1
    assert "unknown model 'convnxt_demo'" in err[-1] and "Did you mean: convnext_demo" in err[-1]


def test_missing_split_file_names_the_file(capsys, tmp_path, synth_root):
    root = synth_root
    (root / "ImageSplits" / "train.txt").unlink()
    code, err = _errors(
        capsys, ["train", f"data.root={root}", "student.name=convnext_demo", f"train.out_dir={tmp_path / 'run'}"]
    )
    assert code == 2
    assert str(root / "ImageSplits" / "train.txt") in err[-1] and "data.root" in err[-1]


def test_bad_override_and_unknown_key(capsys):
    recipe = str(Path(__file__).resolve().parents[1] / "configs" / "image" / "stanford40_pvt_v2_kd.yaml")
    code, err = _errors(capsys, ["train", recipe, "optim.lr"])
    assert code == 2 and "section.key=value" in err[-1]
    code, err = _errors(capsys, ["train", "optim.learning_rate=0.1"])
    assert code == 2 and "unknown key 'optim.learning_rate'" in err[-1]


@pytest.mark.parametrize("command", [["demo"], ["train"], ["eval"], ["list"], ["data", "synth"]])
def test_help_is_available(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: actdistill" in capsys.readouterr().out


def test_list_model_sizes_counts_paper2_teacher(capsys):
    """Measured (cf. paper 2, Table 1): I3D with 101 classes at 64×224² has 12.391 M parameters and 111.15 GMACs."""
    assert main(["list", "models", "--sizes", "--models", "i3d", "top_i3d", "--input", "3", "64", "224", "224"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["i3d"][2:4] == ["12.391", "111.151"]
    assert rows["top_i3d"][2:4] == ["10.533", "45.357"]
