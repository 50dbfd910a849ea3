"""The CLI: help, and the report step's clear error when data/processed is missing."""

import os
import subprocess
import sys

from helpers import ROOT


def _run(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_help_lists_the_steps():
    r = _run("--help")
    assert r.returncode == 0
    for step in ("simulate", "clean", "report"):
        assert step in r.stdout


def test_report_without_processed_data_says_what_to_run(tmp_path):
    r = _run("report", "--processed", str(tmp_path / "nothing"), "--reports",
             str(tmp_path / "reports"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "make data" in r.stderr
    assert not (tmp_path / "reports").exists()


def test_make_help_is_the_default_target():
    r = subprocess.run(["make", "-s"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0
    for target in ("report", "test", "data", "lint", "clean", "env"):
        assert f"  {target} " in r.stdout
