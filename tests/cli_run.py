"""The CLI run in-process through its real entry point (`main`: MammoInsightError and disk errors become
`error: ...` and exit 2), and a tiny RSNA table: what the refusal tests share."""

from __future__ import annotations

import sys

import pytest

RSNA_HEADER = "site_id,patient_id,image_id,laterality,view,age,cancer,machine_id\n"
RSNA_ROWS = "".join(
    f"1,{p},{p}{i},{side},{view},55,{int(p == 10 and side == 'L')},49\n"
    for p in (10, 11, 12)
    for i, (side, view) in enumerate([("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")])
)


def run_cli(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `mammo-insight ARGS` run through the real entry point."""
    from mammo_insight.cli.app import main

    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(sys, "argv", ["mammo-insight", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    return stop.value.code or 0, out.out, out.err


def assert_one_line_error(result: tuple[int, str, str], *words: str) -> None:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
