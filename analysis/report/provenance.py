"""Provenance of every output: package version, git commit, data hashes, software.

Examples
--------
>>> from analysis.report.provenance import provenance
>>> sorted(provenance({"teacher_survey.csv": "abc"}))[:3]
['codebook_version', 'data_sha256', 'git_commit']
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import analysis
from analysis.study.codebook import load_codebook

#: Packages whose versions go into every results file.
TRACKED_PACKAGES = ("numpy", "pandas", "scipy", "statsmodels", "patsy", "matplotlib", "seaborn",
                    "pyarrow", "pandera", "openpyxl")


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the working tree, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(),
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(data_sha256: dict[str, str]) -> dict:
    """The provenance block of results.json."""
    cb = load_codebook()
    return {
        "package_version": analysis.__version__,
        "git_commit": git_commit(),
        "codebook_version": cb.version,
        "data_sha256": dict(sorted(data_sha256.items())),
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def stamp(prov: dict) -> str:
    """One line for the foot of a figure or table."""
    commit = (prov.get("git_commit") or "no-git")[:10]
    data = prov.get("data_sha256", {}).get("teacher_survey.csv", "")[:10]
    return f"support-models {prov['package_version']} · commit {commit} · data {data}"
