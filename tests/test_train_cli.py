"""`s2i-fast train`: one-line errors, a checkpoint on SIGTERM, --resume from the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from s2i_fast.checkpoint import load_checkpoint
from s2i_fast.cli import main
from s2i_fast.data import synthesize


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "set"
    synthesize(root, classes=2, photos_per_class=4, sketches_per_photo=2, size=64, progress=False)
    return root


def run_cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(["train", *args])
    return e.value.code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("data statistics")]


def test_missing_data_is_one_line(tmp_path, capsys):
    code, err = run_cli(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], capsys)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("Error:") and "nope" in lines[0], err


def test_unknown_class_is_one_line(syn, tmp_path, capsys):
    args = ["--data", str(syn), "--classes", "apple,unicorn", "--out", str(tmp_path / "r")]
    code, err = run_cli(args, capsys)
    lines = error_lines(err)
    assert code == 1 and len(lines) == 1 and "unicorn" in lines[0], err
    assert "Traceback" not in err


def test_bad_preset_is_a_usage_error(capsys):
    code, err = run_cli(["--preset", "huge"], capsys)
    assert code == 2 and "Invalid value for '--preset'" in err and "Traceback" not in err


def test_unwritable_run_folder_is_one_line(syn, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(["--data", str(syn), "--out", str(blocker / "run"), "--steps", "1"],
                        capsys)
    lines = error_lines(err)
    assert code == 1 and lines[-1].startswith("Error:") and "run" in lines[-1], err
    assert "Traceback" not in err


def _metrics_lines(run) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_sigterm_writes_a_checkpoint_and_resume_continues(syn, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "s2i_fast", "train", "--data", str(syn), "--out", str(run),
           "--batch-size", "4", "--sample-every", "0", "--ckpt-every", "0"]
    proc = subprocess.Popen([*cmd, "--steps", "1000"], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 240
        while _metrics_lines(run) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    step = load_checkpoint(run / "checkpoints" / "latest.pt")["step"]
    assert step >= 2 and _metrics_lines(run) == step
    assert json.loads((run / "summary.json").read_text())["interrupted"] == "SIGTERM"

    done = subprocess.run(
        [sys.executable, "-m", "s2i_fast", "train", "--resume", str(run), "--steps",
         str(step + 2)], env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming {run} from step {step}" in done.stderr
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == step + 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, step + 3))


def test_existing_run_needs_resume(syn, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(b"x")
    code, err = run_cli(["--data", str(syn), "--out", str(run)], capsys)
    assert code == 1 and "--resume" in err
