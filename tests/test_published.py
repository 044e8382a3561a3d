"""Published tables as data: loading and lookup by dataset."""

from __future__ import annotations

import pytest

from actdistill.analysis.published import published_rows, published_tables


def test_paper1_table1() -> None:
    rows = published_rows("stanford40")
    assert len(rows) == 11
    assert all(r["source"] == "published: paper 1, Table I" for r in rows)
    by_model = {r["model"]: r for r in rows}
    assert by_model["ConvNeXt (teacher)"]["top1"] == 89.08 and by_model["ConvNeXt (teacher)"]["mAP"] == 90.01
    assert by_model["PVT-v2 + KD"]["mAP"] == 90.49 and by_model["Swinv2"]["params_m"] == 27.59
    for name in ("Swinv2", "Twins", "MViTv2", "ConViT", "PVT-v2"):
        assert by_model[f"{name} + KD"]["top1"] > by_model[name]["top1"]  # paper 1: KD improves every student


def test_paper2_tables_by_dataset() -> None:
    ucf = published_rows("UCF101")
    hmdb = published_rows("hmdb51")
    assert {r["table"] for r in ucf} == {"Table 1", "Table 3", "Table 4", "Table 5"}
    assert {r["table"] for r in hmdb} == {"Table 1"}
    ours = [r for r in hmdb if r["model"] == "Ours"][0]
    assert (ours["top1"], ours["top5"]) == (54.5, 79.0)
    thumos = {r["model"]: r for r in published_rows("thumos14")}
    assert thumos["Ours"]["mAP_avg"] == 33.7 and thumos["Teacher (AFSD)"]["gflops"] == 84.4
    assert published_rows("kinetics400") == []


@pytest.mark.parametrize("table", published_tables())
def test_tables_are_well_formed(table: dict) -> None:
    assert table["units"] == "percent" and table["rows"]
    for row in table["rows"]:
        assert {"model", "method"} <= set(row)
        assert all(0 <= row[m] <= 100 for m in table["metrics"] if m in row)
