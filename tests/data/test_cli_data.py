"""The ``medvlsm-data`` console script."""

from __future__ import annotations

from medvlsm_jax.cli.data import main
from tests.data.layout import make_record, write_dataset


def test_list_info_and_build(tmp_path, capsys):
    anns = {f"{s}.json": [make_record(10 * k + i) for i in range(2)]
            for k, s in enumerate(("train", "val", "test"))}
    write_dataset(tmp_path / "m", "clinicdb_polyp", anns)
    assert main(["build", "clinicdb_polyp", "--manual_dir", str(tmp_path / "m"),
                 "--data_dir", str(tmp_path / "d")]) == 0
    assert "clinicdb_polyp: test=2, train=2, val=2" in capsys.readouterr().out
    assert main(["list", "--data_dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert " 1  clinicdb_polyp   p0..p9    train,val,test   yes" in out
    assert "etis_polyp" in out and "no (test only)" in out
    assert main(["info", "pooled_polyp"]) == 0
    out = capsys.readouterr().out
    assert "Kvasir-SEG" in out and "Access conditions:" in out and "BKAI" in out


def test_build_errors_are_reported(tmp_path, capsys):
    assert main(["build", "isic", "--manual_dir", str(tmp_path / "none"),
                 "--data_dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "manual dir" in err and "does not exist" in err and "ISIC" in err
