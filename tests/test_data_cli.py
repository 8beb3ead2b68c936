"""`s2i-fast data synth | sketchify | info`, through the top-level CLI as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2i_fast.cli import cli

V = "tx_000000000000"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "set"
    res = CliRunner().invoke(
        cli,
        [
            "data",
            "synth",
            str(out),
            "--classes",
            "3",
            "--photos-per-class",
            "3",
            "--sketches-per-photo",
            "2",
            "--seed",
            "1",
            "--size",
            "64",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote 9 photos and 18 sketches in 3 classes" in res.output
    return out


def test_synth_then_info(synth_root: Path) -> None:
    res = CliRunner().invoke(cli, ["data", "info", str(synth_root)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["classes"] == 3 and report["photos"] == 9 and report["sketches"] == 18
    assert report["train"] + report["test"] == report["kept"]
    assert report["kept"] + sum(report["dropped"].values()) == 18
    assert report["variants"] == {"photo": [V], "sketch": [V]}
    assert report["synth"]["seed"] == 1
    assert set(report["per_class"]) == {"apple", "house", "mug"}


def test_info_options(synth_root: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "data",
            "info",
            str(synth_root),
            "--classes",
            "mug,apple",
            "--drop-invalid",
            "ambiguous,pose",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["class_names"] == ["apple", "mug"]
    assert report["drop_invalid"] == ["ambiguous", "error", "pose"]
    res = CliRunner().invoke(cli, ["data", "info", str(synth_root), "--classes", "1"])
    assert json.loads(res.output)["class_names"] == ["apple"]


def test_sketchify_cli(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "edges"
    res = CliRunner().invoke(
        cli,
        [
            "data",
            "sketchify",
            str(synth_root / "photo" / V),
            str(out),
            "--method",
            "canny",
            "--size",
            "64",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote 9 photo/sketch pairs in 3 classes" in res.output
    assert len(list((out / "sketch" / V / "mug").glob("*-1.png"))) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "{tmp}/missing"], "data folder not found"),
        (["info", "{root}", "--classes", "zebra"], "unknown class 'zebra'"),
        (["info", "{root}", "--drop-invalid", "blurry"], "unknown invalid list"),
        (["synth", "{root}/info"], "not a synthesized data set"),
        (["sketchify", "{tmp}/nophotos", "{tmp}/o"], "photo folder not found"),
    ],
)
def test_errors_are_one_line(
    synth_root: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    argv = ["data"] + [a.format(tmp=tmp_path, root=synth_root) for a in args]
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_bad_option_value_rejected_by_click(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["data", "synth", str(tmp_path / "x"), "--classes", "0"])
    assert res.exit_code == 2 and "--classes" in res.output


def test_subprocess_error_path(tmp_path: Path) -> None:
    """The real entry point: one line on stderr, exit 1, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "s2i_fast", "data", "info", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"Error: {tmp_path / 'nope'}: data folder not found"


def test_info_skip_bad(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    orphan = root / "sketch" / V / "mug" / "mug_9999-1.png"
    shutil.copy(next((root / "sketch" / V / "mug").glob("*.png")), orphan)
    res = CliRunner().invoke(cli, ["data", "info", str(root)])
    assert res.exit_code == 1 and str(orphan) in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, ["data", "info", str(root), "--skip-bad"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["skipped"] == {"sketch_without_photo": 1}
