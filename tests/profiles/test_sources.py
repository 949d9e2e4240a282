"""Every clinical figure of every built-in profile, with the sentence it comes from.

Each row quotes the practice sheet line or the source sentence behind one figure; the quote must be
one of that reference's stored excerpts (profiles/references.toml), and every excerpt must be
verbatim in the text we hold (the practice sheet, or our research notes quoting the source) when
that text is present beside the repository. A figure that is Givre's own choice cites "givre" and
must be said so in the profile's notes or uncertain list. A new figure with no row fails the
completeness test.
"""

from __future__ import annotations

from typing import Any

import pytest

from profiles.library import load_builtins
from profiles.schema import Profile
from tests.support.paths import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared"
HELD_TEXTS = [SHARED / "seeds" / "000_62a5bbf58c3d67c0.txt", SHARED / "notes" / "domain.md"]

FLYNN = "c'est à partir du moment où la lésion devient toute blanche avec la marge désirée que commencera le temps de congélation (temps 0)"
AAFP = "AK cure 39 % (<5 s), 69 % (>5 s), 83 % (>20 s)"
JESTER = "1–2 mm beyond lesion, single cycle"  # noqa: RUF001 (verbatim)
ONE_OR_TWO = "2 cycles common for warts/thick lesions; 1 cycle for most superficial benign lesions"
CRYOPEN = "allow to thaw for about 30 seconds followed by a second freeze"
GRAHAM = "≥30 s freeze × 2 cycles"  # noqa: RUF001 (verbatim)
PERRI = "3–5 mm margin, two 30-s freeze-thaw cycles, thermoprobe to −50/−60 °C"  # noqa: RUF001 (verbatim)
GIVRE = None  # Givre's own choice: no quote, said in the profile
# Casacci gives these two cycles; the profiles plan the sheet's single time (Givre's reading, said in each).
ONE_CYCLE_AGAINST_CASACCI = {"common-wart", "condyloma", "seborrheic-keratosis-thick"}

# (profile, sheet line, min, default, max, cycles); the default's row quotes the range it lies in.
SHEET_TIMES = [
    ("plantar-wart", "Verrue plantaire : 2 cycle gel-dégel de 20 à 30 s", 20, 20, 30, 2),
    ("common-wart", "Verrue vulgaire : 10 s", 10, 10, 10, 1),
    ("condyloma", "Condylomes : 10 s", 10, 10, 10, 1),
    ("actinic-keratosis", "Kératose actinique : 5 à 10 s", 5, 5, 10, 1),
    ("seborrheic-keratosis-thin", "Kératose séborrhéique mince : 10 s", 10, 10, 10, 1),
    ("seborrheic-keratosis-thick", "Kératose séborrhéique épaisse : 20 à 30 s", 20, 20, 30, 1),
    ("skin-tag", "Molluscum pendulum : 5 à 10 s", 5, 5, 10, 1),
    ("solar-lentigo", "Lentigo solaire : 5 s", 5, 5, 5, 1),
    ("molluscum-contagiosum", "Molluscum contagiosum : 5 à 10 s", 5, 5, 10, 1),
]


def _sheet_rows() -> list[tuple[str, str, Any, str | None, str]]:
    rows: list[tuple[str, str, Any, str | None, str]] = []
    for pid, line, low, default, high, cycles in SHEET_TIMES:
        rows += [
            (pid, "freeze_s.min", low, line, "practice-sheet"),
            (pid, "freeze_s.default", default, line, "practice-sheet"),
            (pid, "freeze_s.max", high, line, "practice-sheet"),
            (pid, "timing_start", "spray_start", GIVRE, "givre"),  # the sources count from the halo: see each profile's uncertain
            (pid, "halo.margin_mm_min", 1, JESTER, "jester-1997"),
            (pid, "halo.margin_mm_max", 2, JESTER, "jester-1997"),
        ]
        if pid == "plantar-wart":
            rows.append((pid, "cycles", cycles, line, "practice-sheet"))
        elif pid in ONE_CYCLE_AGAINST_CASACCI:
            rows.append((pid, "cycles", cycles, GIVRE, "givre"))
        else:
            rows.append((pid, "cycles", cycles, ONE_OR_TWO, "casacci"))
        if cycles > 1:
            rows.append((pid, "thaw.min_s", 30, CRYOPEN, "cryopen-manual"))
    return rows


ROWS = [
    *_sheet_rows(),
    ("superficial-bcc", "freeze_s.min", 30, GRAHAM, "graham-2001"),
    ("superficial-bcc", "freeze_s.default", 30, PERRI, "perri-2011"),
    ("superficial-bcc", "freeze_s.max", 30, GIVRE, "givre"),
    ("superficial-bcc", "cycles", 2, GRAHAM, "graham-2001"),
    ("superficial-bcc", "timing_start", "tissue_target", GRAHAM, "graham-2001"),
    ("superficial-bcc", "target.tissue_c", -50, PERRI, "perri-2011"),
    ("superficial-bcc", "halo.margin_mm_min", 3, PERRI, "perri-2011"),
    ("superficial-bcc", "halo.margin_mm_max", 5, PERRI, "perri-2011"),
    ("superficial-bcc", "thaw.min_s", 0, GIVRE, "givre"),
    ("superficial-bcc", "thaw.until_above_c", 0, GIVRE, "givre"),
]

FIGURES = ("freeze_s.min", "freeze_s.default", "freeze_s.max", "cycles", "timing_start", "thaw.min_s", "thaw.until_above_c",
           "halo.margin_mm_min", "halo.margin_mm_max", "target.tissue_c")


def figure(profile: Profile, path: str) -> Any:
    value: Any = profile
    for part in path.split("."):
        value = getattr(value, part) if value is not None else None
    return getattr(value, "value", value)  # an enum as its TOML text


def declared_source(profile: Profile, path: str) -> str | None:
    """The source the profile itself names for a figure."""
    if path == "cycles":
        return profile.cycles_source
    if path == "timing_start":
        return profile.timing_start_source
    table = getattr(profile, path.split(".", maxsplit=1)[0])
    return table.source if table is not None else None


@pytest.mark.parametrize(("profile_id", "path", "value", "quote", "source"), ROWS, ids=[f"{r[0]}:{r[1]}:{r[4]}" for r in ROWS])
def test_each_figure_comes_from_its_quote(profile_id: str, path: str, value: Any, quote: str | None, source: str) -> None:
    library = load_builtins()
    profile = library.get(profile_id).profile
    assert figure(profile, path) == value
    reference = library.references[source]
    if source == "givre":
        assert reference.kind == "givre"
        said = " ".join((profile.notes, *profile.uncertain))
        assert "Givre's own" in said, f"{profile_id}.{path} is Givre's own choice: the profile must say so"
        return
    assert quote in reference.excerpts, f"{quote!r} is not a stored excerpt of {source!r} (profiles/references.toml)"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert str(abs(int(value))) in quote, f"{value} does not appear in {quote!r}"
    # The row's source is the one the profile names, or a second source backing the default.
    assert source == declared_source(profile, path) or path == "freeze_s.default"


def test_every_figure_of_every_builtin_has_a_row() -> None:
    wanted = {(pid, path) for pid, loaded in load_builtins().profiles.items() for path in FIGURES
              if figure(loaded.profile, path) is not None}
    assert wanted == {(row[0], row[1]) for row in ROWS}


def test_every_builtin_says_when_its_seconds_start_and_why() -> None:
    library = load_builtins()
    for loaded in library.profiles.values():
        assert loaded.profile.timing_start_source is not None, loaded.profile.id
    assert FLYNN in library.references["flynn-2013"].excerpts  # what the sheet profiles' uncertain notes rest on


def test_the_actinic_keratosis_profile_flags_its_ambiguity_where_it_is_picked() -> None:
    ak = load_builtins().get("actinic-keratosis").profile
    caution = " ".join(ak.caution)
    assert "obligatoirement contrôlée" in caution and "lowest-cure band" in caution
    assert AAFP in load_builtins().references["aafp-2020"].excerpts


@pytest.mark.skipif(not all(path.is_file() for path in HELD_TEXTS), reason="the sheet and research notes are not beside the repository")
def test_every_stored_excerpt_is_verbatim_in_the_text_we_hold() -> None:
    held = "\n".join(path.read_text(encoding="utf-8") for path in HELD_TEXTS)
    for reference in load_builtins().references.values():
        for excerpt in reference.excerpts:
            assert excerpt in held, f"{reference.key}: {excerpt!r} is not in the practice sheet nor the research notes"
