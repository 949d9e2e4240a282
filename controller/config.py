"""Clinic configuration (a TOML file), validated strictly like every external input."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal, TypeVar

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controller.errors import GivreError
from profiles.schema import HARD_MAX_FREEZE_S


class ConfigError(GivreError):
    """The clinic config file cannot be used; the message names the file, the key and what is allowed."""


M = TypeVar("M", bound=BaseModel)

# A pseudonymous id's shape: letters, digits, '.', '_', '-', 1-40 long, never a space. A clinic may
# narrow it (e.g. its own patient numbers, "^P-[0-9]{4,6}$"); the built-in refusals of
# records/pseudonym.py (e-mail, social-security number, name with a birth date) apply whatever it says.
PSEUDONYM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
MAX_PHOTO_MB = 100  # the most a clinic may allow; the record store never takes a larger photo
Zoning = dict[Literal["ear", "scalp", "neck"], Literal["face", "body"]]  # the regions no source places (Config.zoning)


class CartridgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size_g: float = Field(gt=0, le=1000)
    nominal_s: float = Field(gt=0, le=10_000)
    price_eur: float = Field(ge=0, le=10_000)
    average_lesions: int = Field(gt=0, le=1000)
    source: str = Field(min_length=3)


# The practice sheet's table "Durée maximum des cartouches" (source: lasermed, per the sheet).
SHEET_CARTRIDGES = {
    "8g": CartridgeSpec(size_g=8, nominal_s=120, price_eur=6, average_lesions=8, source="practice-sheet"),
    "16g": CartridgeSpec(size_g=16, nominal_s=140, price_eur=9, average_lesions=16, source="practice-sheet"),
    "23g": CartridgeSpec(size_g=23, nominal_s=350, price_eur=30, average_lesions=30, source="practice-sheet"),
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clinic_max_freeze_s: float | None = Field(default=None, gt=0, le=HARD_MAX_FREEZE_S)
    calibration_overdue: Literal["warn", "block"] = "warn"
    # The sheet says only that an opened cartridge keeps "plusieurs jours" refrigerated: 7 days is Givre's
    # own figure, so past it a start is warned about (recorded with the arming), refused only with "block".
    cartridge_keeping_days: int = Field(default=7, ge=1, le=365)
    cartridge_past_keeping: Literal["warn", "block"] = "warn"
    cartridges: dict[str, CartridgeSpec] = Field(default_factory=lambda: dict(SHEET_CARTRIDGES))
    # The billing zone of the regions no source we hold places (Givre's own choice by default: ear = face,
    # scalp and neck = body; records/lesion.py); a clinic may set each. Shown as unsourced, never a refusal.
    zoning: Zoning = Field(default_factory=dict)
    halo_spray_cap_s: float = Field(default=HARD_MAX_FREEZE_S, gt=0, le=HARD_MAX_FREEZE_S)
    # A newer CCAM table replacing the shipped one (tariffs change); relative to the config file.
    billing_table: Path | None = None
    # The regex every patient and operator id must match (re.fullmatch), besides the built-in refusals.
    pseudonym_pattern: str = PSEUDONYM_PATTERN
    # A lesion photo larger than this is refused (a phone's full-size JPEG is 3-12 MB).
    max_photo_mb: float = Field(default=20, gt=0, le=MAX_PHOTO_MB)

    @field_validator("pseudonym_pattern")
    @classmethod
    def _a_regex(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc}); e.g. '^P-[0-9]{{4,6}}$'") from None
        return pattern

    @property
    def max_photo_bytes(self) -> int:
        return int(self.max_photo_mb * 1_000_000)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("givre"))


def default_db() -> Path:
    return default_data_dir() / "records.sqlite"


def read_toml(path: Path, model: type[M], error: type[Exception]) -> M:
    """Read and validate one TOML input file; every problem is one line naming the file, the key, the
    bad value and what is allowed (raised as ``error``)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}); check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc']) or '(file)'} = {_short(repr(e.get('input')))}: "
                 f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()]
        raise error("\n".join(lines)) from exc


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config(path: Path | None) -> Config:
    if path is None:
        candidate = Path(platformdirs.user_config_dir("givre")) / "config.toml"
        if not candidate.exists():
            return Config()
        path = candidate
    config = read_toml(path, Config, ConfigError)
    if config.billing_table is not None and not config.billing_table.is_absolute():
        config = config.model_copy(update={"billing_table": path.parent.resolve() / config.billing_table})
    return config
