"""Files holding health data: never through a planted name, never through a symlink; a store folder
others can write is said in one line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.cli.ui import build_clinic
from controller.records.private_files import UnsafeTarget, file_mode, folder_warning, write_private
from controller.records.store import RecordStore


def test_a_file_or_symlink_at_the_old_predictable_temp_name_is_neither_reused_nor_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    target = tmp_path / "export.csv"
    planted_link = tmp_path / f".{target.name}.tmp-{os.getpid()}"  # the name write_private used to write through
    planted_link.symlink_to(victim)
    planted_file = tmp_path / f".{target.name}.tmp"
    planted_file.write_text("planted")
    write_private(target, b"patient data")
    assert target.read_bytes() == b"patient data" and file_mode(target) == 0o600 and not target.is_symlink()
    assert victim.read_text() == "someone else's file"
    assert planted_link.is_symlink() and planted_file.read_text() == "planted"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([victim.name, target.name, planted_link.name, planted_file.name])


def test_a_symlink_target_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    target = tmp_path / "report.html"
    target.symlink_to(victim)
    with pytest.raises(UnsafeTarget, match=r"report.html: is a symbolic link; Givre writes health data only to a plain file"):
        write_private(target, b"data")
    assert victim.read_text() == "keep"


def test_replacing_a_file_keeps_it_private_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new" and file_mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize(("mode", "who"), [(0o770, "its group"), (0o707, "every user"), (0o777, "its group and every user")])
def test_a_group_or_world_writable_store_folder_warns(tmp_path: Path, mode: int, who: str) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    folder.chmod(mode)
    warning = folder_warning(folder)
    assert warning is not None and f"is writable by {who} (mode {mode:04o})" in warning and "chmod go-w" in warning
    assert folder_warning(tmp_path / "missing") is None
    folder.chmod(0o700)
    assert folder_warning(folder) is None


def test_the_cli_says_the_warning_once_on_stderr_when_it_opens_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    db = folder / "r.sqlite"
    with RecordStore(db):
        pass
    folder.chmod(0o775)
    assert main(["records", "list", "--db", str(db)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"givre: warning: {folder} (the record store's folder) is writable by its group")
    folder.chmod(0o700)
    assert main(["records", "list", "--db", str(db)]) == 0
    assert capsys.readouterr().err == ""


def test_the_ui_gets_the_warning_as_a_notice_it_shows(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o770)
    clinic = build_clinic(argparse.Namespace(db=folder / "r.sqlite"))
    try:
        assert len(clinic.notices) == 1 and "is writable by its group" in clinic.notices[0]
    finally:
        clinic.supervisor.close()
        clinic.store.close()
