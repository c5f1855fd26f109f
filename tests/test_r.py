"""The R package in r/xband: `R CMD build` and `R CMD check --no-manual` with no ERROR or WARNING,
its testthat tests included (they run xband on a shipped Keras model: the README's R lines on a
GeoTIFF folder written by terra, terra rasters with factor labels, an error from xband); the
README's install line run as written; man/ and NAMESPACE as roxygen2 writes them.

R is required, not optional: without R or one of its packages these tests FAIL and say how to
install them (.ci/run installs them). On a machine without R, set XBAND_SKIP_R=1 to skip them.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xband.cli.main import R_PACKAGE, main

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PACKAGES = ("r-base-core r-cran-jsonlite r-cran-processx r-cran-terra r-cran-ggplot2 "
                   "r-cran-testthat r-cran-withr r-cran-roxygen2 r-cran-codetools")
R_PACKAGES = ["jsonlite", "processx", "terra", "ggplot2", "testthat", "withr", "roxygen2"]
README_TEST = R_PACKAGE / "tests" / "testthat" / "test-readme.R"


def missing_r_tools() -> list[str]:
    """What of R and the R packages the checks need is not installed."""
    if shutil.which("R") is None or shutil.which("Rscript") is None:
        return ["R"]
    probe = ("for (p in commandArgs(TRUE)) if (!requireNamespace(p, quietly = TRUE)) "
             "cat(p, '\\n')")
    done = subprocess.run(["Rscript", "-e", probe, *R_PACKAGES], capture_output=True, text=True)
    return done.stdout.split()


@pytest.fixture(scope="module")
def r_tools() -> None:
    if os.environ.get("XBAND_SKIP_R") == "1":
        pytest.skip("XBAND_SKIP_R=1: the R package is not checked")
    missing = missing_r_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: the R package cannot be checked. "
                    f"Install R as CI does (.ci/run): apt-get install -y --no-install-recommends "
                    f"{DEBIAN_PACKAGES}; or set XBAND_SKIP_R=1 to skip these tests.")


def r_env(**extra: str) -> dict[str, str]:
    """The environment for R: this venv's xband handed over as XBAND_TEST_VENV, not on the PATH
    (the README test puts it there as the README says), a cache for Keras conversions."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "xband").is_file(), f"no xband command beside {sys.executable}"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != venv_bin.resolve())
    env = {k: v for k, v in os.environ.items() if k != "XBAND"}
    env.update(PATH=path, XBAND_TEST_VENV=str(venv_bin.parent), LANG="C.UTF-8", **extra)
    env.setdefault("XBAND_CACHE_DIR", str(Path.home() / ".cache" / "xband"))
    return env


def test_r_cmd_check_passes_with_every_test_run(r_tools, tmp_path):
    built = subprocess.run(["R", "CMD", "build", str(R_PACKAGE)], cwd=tmp_path,
                           capture_output=True, text=True, env=r_env())
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    tarball = next(tmp_path.glob("xband_*.tar.gz"))
    checked = subprocess.run(["R", "CMD", "check", "--no-manual", tarball.name], cwd=tmp_path,
                             capture_output=True, text=True, env=r_env(), timeout=900)
    log = (tmp_path / "xband.Rcheck" / "00check.log").read_text()
    tests = next((tmp_path / "xband.Rcheck" / "tests").glob("testthat.Rout*"), None)
    output = tests.read_text() if tests else "(no test output)"
    status = re.search(r"^Status: (.*)$", log, re.MULTILINE)
    assert status and "ERROR" not in status[1] and "WARNING" not in status[1], \
        log[-4000:] + output[-6000:]
    assert checked.returncode == 0, checked.stdout[-3000:]
    counts = re.findall(r"\[ FAIL (\d+) \| WARN (\d+) \| SKIP (\d+) \| PASS (\d+) \]", output)
    assert counts, output[-3000:]
    fail, warn, skip, passed = map(int, counts[-1])
    assert (fail, warn, skip) == (0, 0, 0) and passed > 50, output[-6000:]


def readme_r_lines() -> list[str]:
    """The R block of the README's section "From R"."""
    section = (REPO / "README.md").read_text().split("\n## From R\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```r\n(.*?)```", section, re.DOTALL)
    assert block, "no ```r block in the README's section 'From R'"
    return block[1].rstrip("\n").split("\n")


def test_readme_r_lines_install_the_package_and_are_the_tested_ones(r_tools, tmp_path):
    lines = readme_r_lines()
    install, rest = lines[0], lines[1:]
    assert install.startswith("install.packages(\"r/xband\""), install
    library = tmp_path / "library"
    library.mkdir()
    env = r_env(R_LIBS=str(library))
    done = subprocess.run(["Rscript", "-e", install], cwd=REPO, capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    loaded = subprocess.run(["Rscript", "-e", "library(xband); cat(find.package('xband'))"],
                            capture_output=True, text=True, env=env)
    assert loaded.returncode == 0 and Path(loaded.stdout).parent == library, loaded.stderr
    tested = README_TEST.read_text().split("# README lines, verbatim:\n", 1)[1]
    tested = tested.split("# end of the README lines", 1)[0]
    as_tested = [line.strip() for line in tested.strip().split("\n")]  # indented in test_that
    assert [line.strip() for line in rest] == as_tested, \
        f"the README's R lines are not those test-readme.R runs:\n{rest}\n---\n{tested}"


def test_man_pages_are_what_roxygen2_writes(r_tools, tmp_path):
    copy = tmp_path / "xband"
    shutil.copytree(R_PACKAGE, copy)
    done = subprocess.run(["Rscript", "-e", "roxygen2::roxygenise()"], cwd=copy,
                          capture_output=True, text=True, env=r_env())
    assert done.returncode == 0, done.stderr[-3000:]
    compared = filecmp.dircmp(R_PACKAGE / "man", copy / "man")
    assert not (compared.diff_files or compared.left_only or compared.right_only), \
        "man/ is out of date: run roxygen2::roxygenise() in r/xband"
    assert (R_PACKAGE / "NAMESPACE").read_text() == (copy / "NAMESPACE").read_text()


def test_r_path_prints_the_package_folder(capsys):
    assert main(["r-path"]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == R_PACKAGE and (R_PACKAGE / "DESCRIPTION").is_file()
    assert "R CMD INSTALL" in err and "library(xband)" in err
