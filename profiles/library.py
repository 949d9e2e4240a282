"""Loading profiles: the built-ins shipped in the package, then a clinic's directory on top.

A clinic file may add a profile or override a built-in by id (never changing its indication);
wherever a profile is shown, its origin says which file it came from. Every problem is collected
as one line naming the file, the key path, the bad value and what is allowed, never a traceback.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import ValidationError

from profiles.schema import Profile, Reference, References, unit_for

BUILTIN_ORIGIN = "built-in"
SHOWN_CHARS = 60  # a bad value longer than this is cut with "..." in a problem line


class ProfileError(Exception):
    """Base of the profiles package's errors."""


class UnknownProfile(ProfileError):
    pass


class InvalidProfiles(ProfileError):
    def __init__(self, issues: list[ProfileIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True, slots=True)
class ProfileIssue:
    file: str
    location: str  # a key path such as freeze_s.max, or "line 3" for TOML syntax
    message: str
    value: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: {self.location}" if self.location else self.file
        value = f" = {self.value}" if self.value is not None else ""
        return f"{where}{value}: {self.message}"


@dataclass(frozen=True, slots=True)
class LoadedProfile:
    profile: Profile
    origin: str  # "built-in" or the file's path
    overrides_builtin: bool = False


@dataclass(slots=True)
class Library:
    profiles: dict[str, LoadedProfile] = field(default_factory=dict)
    references: dict[str, Reference] = field(default_factory=dict)

    def get(self, profile_id: str) -> LoadedProfile:
        try:
            return self.profiles[profile_id]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise UnknownProfile(f"no profile {profile_id!r}; known profiles: {known}") from None

    def for_device(self, kind: str) -> list[LoadedProfile]:
        return [p for p in self.profiles.values() if p.profile.runs_on(kind)]

    def cite(self, source: str) -> str:
        """A source key resolved to its citation; a free-text citation as it stands."""
        ref = self.references.get(source)
        return f"{ref.citation} [{ref.kind}]" if ref else source


def builtin_references() -> dict[str, Reference]:
    text = resources.files("profiles").joinpath("references.toml").read_text(encoding="utf-8")
    refs = References.model_validate(tomllib.loads(text))
    return {ref.key: ref for ref in refs.reference}


def load_builtins() -> Library:
    library = Library(references=builtin_references())
    issues: list[ProfileIssue] = []
    for entry in sorted(resources.files("profiles").joinpath("builtin").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            profile = parse_profile(entry.read_text(encoding="utf-8"), f"profiles/builtin/{entry.name}", issues, library.references)
            if profile is not None:
                library.profiles[profile.id] = LoadedProfile(profile, BUILTIN_ORIGIN)
    if issues:  # a broken built-in is a release defect: refuse to run rather than guess
        raise InvalidProfiles(issues)
    return library


def default_clinic_dir() -> Path:
    """Where a clinic keeps its own profiles (the per-user configuration directory)."""
    return Path(platformdirs.user_config_dir("givre")) / "profiles"


def load_library(clinic_dir: Path | None = None) -> Library:
    """Built-ins, then every *.toml in the clinic directory (default: default_clinic_dir()), if it exists."""
    library = load_builtins()
    clinic_dir = default_clinic_dir() if clinic_dir is None else clinic_dir
    if not clinic_dir.is_dir():
        return library
    files = sorted(clinic_dir.glob("*.toml"))
    issues = add_files(library, files)
    if issues:
        raise InvalidProfiles(issues)
    return library


def add_files(library: Library, files: list[Path]) -> list[ProfileIssue]:
    """Parse files and add them to the library; returns every problem found (nothing is added then)."""
    issues: list[ProfileIssue] = []
    parsed: dict[str, tuple[Profile, Path]] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ProfileIssue(str(path), "", f"cannot be read ({exc}); it must be a UTF-8 TOML file"))
            continue
        profile = parse_profile(text, str(path), issues, library.references)
        if profile is None:
            continue
        if profile.id in parsed:
            issues.append(ProfileIssue(str(path), "id", f"already defined in {parsed[profile.id][1]}; each id once", repr(profile.id)))
            continue
        parsed[profile.id] = (profile, path)
        builtin = library.profiles.get(profile.id)
        if builtin is not None and builtin.origin == BUILTIN_ORIGIN and builtin.profile.indication is not profile.indication:
            issues.append(
                ProfileIssue(
                    str(path), "indication",
                    f"an override may not change the indication of built-in {profile.id!r} "
                    f"({builtin.profile.indication.value}); give the profile a new id instead",
                    repr(profile.indication.value),
                )
            )
    if not issues:
        for profile_id, (profile, path) in parsed.items():
            overrides = profile_id in library.profiles and library.profiles[profile_id].origin == BUILTIN_ORIGIN
            library.profiles[profile_id] = LoadedProfile(profile, str(path), overrides)
    return issues


def parse_profile(text: str, file: str, issues: list[ProfileIssue], references: dict[str, Reference]) -> Profile | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        issues.append(ProfileIssue(file, "", f"not valid TOML: {exc}"))
        return None
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issue_from_error(file, error, data) for error in exc.errors())
        return None
    unknown = _check_sources(profile, file, references)
    issues.extend(unknown)
    return None if unknown else profile


def _check_sources(profile: Profile, file: str, references: dict[str, Reference]) -> list[ProfileIssue]:
    """A source written as a key must name a known reference; a citation in full must have words."""
    cited = {"cycles_source": profile.cycles_source, "freeze_s.source": profile.freeze_s.source}
    if profile.timing_start_source is not None:
        cited["timing_start_source"] = profile.timing_start_source
    for table in ("thaw", "halo", "target"):
        part = getattr(profile, table)
        if part is not None:
            cited[f"{table}.source"] = part.source
    issues = []
    for path, source in cited.items():
        if " " not in source and source not in references:
            known = ", ".join(sorted(references))
            issues.append(
                ProfileIssue(file, path, f"is not a known source key ({known}); or write the citation in full", repr(source))
            )
    return issues


def _issue_from_error(file: str, error: Any, data: dict[str, Any]) -> ProfileIssue:
    loc = tuple(error["loc"])
    path = ".".join(str(part) for part in loc)
    kind = error["type"]
    ctx = error.get("ctx", {})
    unit = unit_for(loc)
    value = None if kind == "missing" else _show(error.get("input"))
    messages = {
        "missing": "is required",
        "extra_forbidden": "is not a known key; check its spelling (see docs/profiles.md)",
        "less_than_equal": f"must be <= {_num(ctx.get('le'))}{unit}",
        "less_than": f"must be < {_num(ctx.get('lt'))}{unit}",
        "greater_than": f"must be > {_num(ctx.get('gt'))}{unit}",
        "greater_than_equal": f"must be >= {_num(ctx.get('ge'))}{unit}",
        "string_pattern_mismatch": "must be lower-case letters, digits and single hyphens (a slug)",
        "string_too_short": f"must be at least {ctx.get('min_length')} characters",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "too_short": "must not be empty",
        "float_parsing": "must be a number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be text in quotes",
        "float_type": "must be a number",
        "int_type": "must be a whole number",
        "tuple_type": "must be a list, e.g. [\"spray\"]",
        "model_type": "must be a table, e.g. [freeze_s]",
    }
    message = messages.get(kind)
    if message is None:
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind in {"enum", "literal_error"}:
            message = f"must be one of {ctx.get('expected')}"
    if kind == "value_error" and isinstance(error.get("input"), dict):
        value = None  # a rule across a table's keys: the message names the values
    return ProfileIssue(file, path, message, value)


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{...}"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
