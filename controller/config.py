"""Clinic configuration (a TOML file), validated strictly like every external input."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from profiles.schema import HARD_MAX_FREEZE_S


class ConfigError(Exception):
    pass


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
    # The sheet says an opened cartridge keeps "plusieurs jours" refrigerated; 7 is Givre's default.
    cartridge_keeping_days: int = Field(default=7, ge=1, le=365)
    cartridges: dict[str, CartridgeSpec] = Field(default_factory=lambda: dict(SHEET_CARTRIDGES))
    halo_spray_cap_s: float = Field(default=HARD_MAX_FREEZE_S, gt=0, le=HARD_MAX_FREEZE_S)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("givre"))


def default_db() -> Path:
    return default_data_dir() / "records.sqlite"


def load_config(path: Path | None) -> Config:
    if path is None:
        candidate = Path(platformdirs.user_config_dir("givre")) / "config.toml"
        if not candidate.exists():
            return Config()
        path = candidate
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc'])} = {e.get('input')!r}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc
