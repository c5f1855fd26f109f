"""Atomic writing: files and folders appear whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from xband.files import atomic_folder, atomic_path, write_text


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
    out.mkdir()
    (out / "summary.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt), atomic_folder(out) as tmp:
        (tmp / "summary.json").write_text('{"new": 1}')
        raise KeyboardInterrupt
    assert (out / "summary.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["report"]
