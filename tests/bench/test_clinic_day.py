"""A simulated clinic day, 40 sessions through 1 % corrupted frames: nothing lost, nothing doubled."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clinic_day import clinic_day


@pytest.mark.pty
@pytest.mark.slow
def test_a_clinic_day_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    audit = clinic_day(tmp_path / "day.sqlite", sessions=40, corrupt_pct=1.0, scale=100)
    assert audit.frames_corrupted > 0  # the faults really happened
    assert audit.completed == 40
    assert audit.freezes_recorded == audit.freezes_on_device == 60  # 40 sessions, one or two lesions, one cycle each
    assert audit.duplicate_results == 0 and audit.chain_ok
