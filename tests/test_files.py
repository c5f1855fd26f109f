"""Atomic writing: files and folders appear whole or not at all, with ordinary permissions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from xband.errors import XbandError
from xband.files import (
    MANIFEST,
    atomic_folder,
    atomic_path,
    check_file_writable,
    check_output_folder,
    foreign_files,
    write_text,
)


def test_atomic_writers_leave_nothing_behind_on_failure(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text(tmp_path / "report.html", "<html></html>")
    assert os.listdir(tmp_path) == []


def test_write_text_replaces_whole_file_with_umask_permissions(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old and longer content")
    old = os.umask(0o027)
    try:
        write_text(path, "néw")
    finally:
        os.umask(old)
    assert path.read_text(encoding="utf-8") == "néw"
    assert os.listdir(tmp_path) == ["report.html"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_atomic_path_keeps_the_suffix_writers_insist_on(tmp_path):
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert os.listdir(tmp_path) == ["model.keras"]


def test_interrupted_folder_leaves_the_old_one_untouched(tmp_path):
    out = tmp_path / "report"
    write_report(out, files=("summary.json",))
    with pytest.raises(KeyboardInterrupt), atomic_folder(out) as tmp:
        (tmp / "summary.json").write_text('{"new": 1}')
        raise KeyboardInterrupt
    assert (out / "summary.json").read_text() == "summary.json"
    assert sorted(os.listdir(tmp_path)) == ["report"]


def write_report(out, files=("report.html", "figures/a.png")):
    with atomic_folder(out) as tmp:
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(name)


def test_a_folder_xband_wrote_is_replaced_until_someone_adds_a_file(tmp_path):
    out = tmp_path / "report"
    write_report(out)
    assert json.loads((out / MANIFEST).read_text())["files"] == ["figures/a.png", "report.html"]
    write_report(out, files=("summary.json",))  # replaced whole: the old files are gone
    assert sorted(os.listdir(out)) == ["summary.json", MANIFEST]
    (out / "my notes.txt").write_text("mine")
    with pytest.raises(XbandError, match=r"holds files xband did not write \(my notes.txt\); "
                       "choose an empty or new folder"):
        write_report(out)
    assert (out / "my notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["report"]  # no hidden temporary folder left


def test_a_users_folder_is_replaced_only_with_overwrite(tmp_path):
    project = tmp_path / "my_project"
    (project / "data").mkdir(parents=True)
    (project / "thesis.tex").write_text("years of work")
    with pytest.raises(XbandError, match=r"thesis.tex.*pass overwrite=True"):
        check_output_folder(project)
    assert foreign_files(project) == ["thesis.tex"]
    with atomic_folder(project, overwrite=True) as tmp:
        (tmp / "report.html").write_text("new")
    assert sorted(os.listdir(project)) == ["report.html", MANIFEST]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_folder(empty) == empty  # an empty folder is fine


@pytest.mark.parametrize("out", [".", "", "..", "  "])
def test_current_folder_and_empty_names_are_refused_without_leftovers(out, tmp_path,
                                                                      monkeypatch):
    here = tmp_path / "work"
    here.mkdir()
    (here / "keep.txt").write_text("mine")
    monkeypatch.chdir(here)
    with pytest.raises(XbandError, match="current folder|is empty"):
        with atomic_folder(out) as tmp:
            (tmp / "report.html").write_text("x")
    assert sorted(os.listdir(here)) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["work"]


def test_out_must_keep_apart_from_the_inputs(tmp_path):
    data = tmp_path / "patches"
    (data / "Forest").mkdir(parents=True)
    model = tmp_path / "models" / "net.onnx"
    model.parent.mkdir()
    model.write_text("x")
    inputs = {"--data": data, "--model": model}
    for out, relation in [(data, "is --data"), (tmp_path, "holds --data"),
                          (data / "Forest" / "report", "lies inside --data"),
                          (model.parent, "holds --model")]:
        with pytest.raises(XbandError, match=relation):
            check_output_folder(out, inputs=inputs, overwrite=True)
    assert check_output_folder(tmp_path / "report", inputs=inputs) == tmp_path / "report"


def test_a_file_that_cannot_be_created_is_named_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("x")
    for bad in [tmp_path / "a-file" / "stats.json", Path("/proc/no-such/stats.json")]:
        with pytest.raises(XbandError, match="--norm-stats .*cannot be created"):
            check_file_writable(bad, "--norm-stats")
    check_file_writable(tmp_path / "new" / "deeper" / "stats.json", "--norm-stats")
    assert sorted(os.listdir(tmp_path)) == ["a-file"]  # nothing made
