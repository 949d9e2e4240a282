"""Lesion profiles: the built-ins match the practice sheet, and no file can yield a freeze beyond the hard bounds."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.cli.main import main
from profiles.library import InvalidProfiles, ProfileIssue, add_files, load_builtins, load_library
from profiles.schema import HARD_MAX_FREEZE_S, MAX_CYCLES, Profile
from tests.profiles.test_sources import SHEET_TIMES
from tests.support.paths import REPO_ROOT

BUILTIN_DIR = REPO_ROOT / "profiles" / "builtin"

@pytest.mark.parametrize("row", SHEET_TIMES, ids=[row[0] for row in SHEET_TIMES])
def test_builtin_profile_matches_the_practice_sheet(row: tuple[str, str, int, int, int, int]) -> None:
    """The sheet's seconds are kept (each figure's quote: tests/profiles/test_sources.py)."""
    profile_id, quote, low, default, high, cycles = row
    profile = load_builtins().get(profile_id).profile
    assert (profile.freeze_s.min, profile.freeze_s.default, profile.freeze_s.max, profile.cycles) == (low, default, high, cycles), quote
    assert profile.freeze_s.source == "practice-sheet" and profile.timing_start.value == "spray_start"
    assert profile.indication.value == "cryotherapy" and profile.act_family == "cryotherapy"


def test_every_builtin_cites_known_references_and_the_library_is_exactly_this() -> None:
    library = load_builtins()
    sheet_ids = {row[0] for row in SHEET_TIMES}
    assert set(library.profiles) == sheet_ids | {"superficial-bcc"}
    for loaded in library.profiles.values():
        assert loaded.origin == "built-in"


def test_cryosurgery_profile_requires_probe_thermocouple_and_liquid_nitrogen() -> None:
    bcc = load_builtins().get("superficial-bcc").profile
    assert bcc.indication.value == "cryosurgery" and bcc.device_kinds == ("probe",)
    assert bcc.cryogen == "ln2" and bcc.requires_tissue_thermocouple
    assert bcc.target is not None and bcc.target.tissue_c == -50
    assert bcc.thaw is not None and bcc.thaw.until_above_c == 0
    assert bcc.uncertain, "what the literature does not settle must be said in the data"


def base_profile(**changes: Any) -> dict[str, Any]:
    data = tomllib.loads((BUILTIN_DIR / "plantar-wart.toml").read_text(encoding="utf-8"))
    data.update(changes)
    return data


numbers = st.one_of(
    st.integers(-10**9, 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, -0.0, 60, 60.0000001, 1e-9, "10", "ten", None, True]),
)


@settings(max_examples=400)
@given(numbers, numbers, numbers, st.one_of(st.integers(-5, 10), st.floats(), st.just("2")))
def test_no_profile_yields_a_freeze_beyond_the_hard_bounds(low: Any, default: Any, high: Any, cycles: Any) -> None:
    data = base_profile(cycles=cycles)
    data["freeze_s"] = {"min": low, "default": default, "max": high, "source": "practice-sheet"}
    try:
        profile = Profile.model_validate(data)
    except ValidationError:
        return
    f = profile.freeze_s
    for value in (f.min, f.default, f.max):
        assert math.isfinite(value) and 0 < value <= HARD_MAX_FREEZE_S
    assert f.min <= f.default <= f.max
    assert 1 <= profile.cycles <= MAX_CYCLES


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def toml_of(data: dict[str, Any]) -> str:
    """A tiny TOML writer for these tests (flat keys and one level of tables)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def issues_for(tmp_path: Path, *files: tuple[str, str]) -> list[str]:
    paths = [write(tmp_path, name, text) for name, text in files]
    return [str(issue) for issue in add_files(load_builtins(), paths)]


def test_the_issue_example_freeze_above_60(tmp_path: Path) -> None:
    data = base_profile(id="warts")
    data["freeze_s"] = {**data["freeze_s"], "max": 90}
    assert issues_for(tmp_path, ("warts.toml", toml_of(data))) == [f"{tmp_path}/warts.toml: freeze_s.max = 90: must be <= 60 s"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('id = "x"\nfreeze_s = {min = 5\n', "not valid TOML: "),
        (toml_of(base_profile(id="x", colour="red")), "colour = 'red': is not a known key"),
        (toml_of(base_profile(id="x", cycles="two")), "cycles = 'two': must be a whole number"),
        (toml_of(base_profile(id="x", cycles=4)), "cycles = 4: must be <= 3"),
        (toml_of(base_profile(id="Bad Id")), "id = 'Bad Id': must be lower-case letters, digits and single hyphens"),
        (toml_of(base_profile(id="x", device_kinds=["laser"])), "device_kinds.0 = 'laser': must be one of 'spray', 'probe' or 'manual'"),
        (toml_of(base_profile(id="x", cycles_source="my-notes")), "cycles_source = 'my-notes': is not a known source key"),
        (toml_of({k: v for k, v in base_profile(id="x").items() if k != "thaw"}), "cycles = 2 needs a [thaw] table"),
        (toml_of(base_profile(id="x", freeze_s={"min": 30, "default": 20, "max": 30, "source": "practice-sheet"})),
         "freeze_s: must have min <= default <= max (got 30 / 20 / 30 s)"),
        (toml_of(base_profile(id="x", freeze_s={"min": 0, "default": 20, "max": 30, "source": "practice-sheet"})),
         "freeze_s.min = 0: must be > 0 s"),
        (toml_of(base_profile(id="x", thaw={"min_s": -1, "source": "cryopen-manual"})), "thaw.min_s = -1: must be >= 0 s"),
    ],
    ids=["malformed", "unknown-key", "wrong-type", "cycles", "slug", "device-kind", "source-key", "no-thaw", "order", "zero", "thaw"],
)
def test_bad_profile_files_get_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    issues = issues_for(tmp_path, ("bad.toml", text))
    assert issues and all(line.startswith(f"{tmp_path}/bad.toml: ") for line in issues)
    assert any(expected in line for line in issues), issues


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    (issue,) = issues_for(tmp_path, ("bad.toml", 'id = "x"\nname_fr = \n'))
    assert "line 2" in issue


def test_temperatures_beyond_the_cryogen_are_refused(tmp_path: Path) -> None:
    data = tomllib.loads((BUILTIN_DIR / "superficial-bcc.toml").read_text(encoding="utf-8"))
    data.update(id="too-cold", cryogen="n2o")
    data["target"] = {"tissue_c": -120, "source": "graham-2001"}
    (issue,) = issues_for(tmp_path, ("cold.toml", toml_of(data)))
    assert "target.tissue_c = -120: n2o cannot go below -89 C" in issue


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    text = toml_of(base_profile(id="clinic-wart"))
    issues = issues_for(tmp_path, ("a.toml", text), ("b.toml", text))
    assert issues == [f"{tmp_path}/b.toml: id = 'clinic-wart': already defined in {tmp_path}/a.toml; each id once"]


def test_an_override_may_not_change_the_indication(tmp_path: Path) -> None:
    data = base_profile(indication="cryosurgery", device_kinds=["spray"])
    (issue,) = issues_for(tmp_path, ("override.toml", toml_of(data)))
    assert "indication = 'cryosurgery': an override may not change the indication of built-in 'plantar-wart'" in issue


def test_a_clinic_override_replaces_the_builtin_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = base_profile(timing_start="halo", timing_start_source="flynn-2013")
    data["freeze_s"] = {"min": 20, "default": 25, "max": 30, "source": "practice-sheet"}
    path = write(tmp_path, "plantar.toml", toml_of(data))
    write(tmp_path, "extra.toml", toml_of(base_profile(id="clinic-wart", name_en="Clinic wart")))
    library = load_library(tmp_path)
    loaded = library.get("plantar-wart")
    assert loaded.origin == str(path) and loaded.overrides_builtin and loaded.profile.freeze_s.default == 25
    assert loaded.profile.timing_start.value == "halo"  # the sources' convention, as a clinic override
    assert library.get("clinic-wart").origin.endswith("extra.toml") and not library.get("clinic-wart").overrides_builtin

    assert main(["profiles", "list", "--json", "--profiles", str(tmp_path)]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["plantar-wart"]["origin"] == str(path) and rows["plantar-wart"]["overrides_builtin"] is True
    assert rows["common-wart"] == {
        "id": "common-wart", "name_fr": "Verrue vulgaire", "name_en": "Common wart", "indication": "cryotherapy",
        "act_family": "cryotherapy", "device_kinds": ["spray", "manual"], "freeze_s": {"min": 10.0, "default": 10.0, "max": 10.0},
        "cycles": 1, "timing_start": "spray_start", "timing_start_source": "givre", "caution": [],
        "origin": "built-in", "overrides_builtin": False,
    }
    assert main(["profiles", "show", "plantar-wart", "--profiles", str(tmp_path)]) == 0
    assert f"origin        {path} (overrides the built-in profile)" in capsys.readouterr().out


def test_an_invalid_clinic_directory_is_refused_whole(tmp_path: Path) -> None:
    write(tmp_path, "bad.toml", "id = 3\n")
    with pytest.raises(InvalidProfiles) as info:
        load_library(tmp_path)
    assert all(isinstance(issue, ProfileIssue) for issue in info.value.issues)


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.toml", toml_of(base_profile(id="clinic-wart")))
    bad = write(tmp_path, "bad.toml", toml_of(base_profile(id="x", cycles=9)))
    assert main(["profiles", "check", str(good)]) == 0
    assert f"{good}: ok" in capsys.readouterr().out
    assert main(["profiles", "check", str(good), str(bad)]) == 1
    assert capsys.readouterr().out.strip() == f"{bad}: cycles = 9: must be <= 3"
    assert main(["profiles", "check", str(tmp_path / "absent.toml")]) == 1
    assert "cannot be read" in capsys.readouterr().out


def test_builtin_files_pass_the_check_command(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in BUILTIN_DIR.glob("*.toml"))
    assert main(["profiles", "check", *files]) == 0


def test_show_unknown_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["profiles", "show", "nope", "--profiles", str(tmp_path)]) == 1
    assert "no profile 'nope'; known profiles: actinic-keratosis" in capsys.readouterr().out


def test_listing_by_device_kind() -> None:
    library = load_builtins()
    assert {p.profile.id for p in library.for_device("probe")} == {"superficial-bcc"}
    assert "superficial-bcc" not in {p.profile.id for p in library.for_device("spray")}
