"""What the clinician records about a session and a lesion: validated input, pseudonymous ids only.

The photo is judged by its content where it is read (records/photo.py: a regular file under the
clinic's size limit that decodes as an image), not by its name here.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from controller.config import PSEUDONYM_PATTERN, Zoning
from controller.records.pseudonym import personal_data_kind


def _names_no_one(value: object) -> object:
    """The built-in refusals of records/pseudonym.py, so no path records an e-mail or a NIR as an id
    (before the shape, so the refusal says what the value looks like)."""
    kind = personal_data_kind(value) if isinstance(value, str) else None
    if kind is not None:
        raise ValueError(kind)
    return value


# A pseudonymous identifier: letters, digits, '-', '_', '.'; never a name with spaces, never personal data.
PseudoId = Annotated[str, StringConstraints(pattern=PSEUDONYM_PATTERN), BeforeValidator(_names_no_one)]


class Zone(enum.StrEnum):
    FACE = "face"
    BODY = "body"  # "outside the face" in the billing codes


class Region(enum.StrEnum):
    FOREHEAD = "forehead"
    TEMPLE = "temple"
    EYELID = "eyelid"
    NOSE = "nose"
    CHEEK = "cheek"
    EAR = "ear"
    LIP = "lip"
    CHIN = "chin"
    SCALP = "scalp"
    NECK = "neck"
    CHEST = "chest"
    BACK = "back"
    ABDOMEN = "abdomen"
    SHOULDER = "shoulder"
    ARM = "arm"
    FOREARM = "forearm"
    HAND = "hand"
    FINGER = "finger"
    BUTTOCK = "buttock"
    GENITAL = "genital"
    PERIANAL = "perianal"
    THIGH = "thigh"
    KNEE = "knee"
    LEG = "leg"
    FOOT_SOLE = "foot-sole"
    FOOT_DORSUM = "foot-dorsum"
    TOE = "toe"


FACE_REGIONS = frozenset({Region.FOREHEAD, Region.TEMPLE, Region.EYELID, Region.NOSE, Region.CHEEK, Region.EAR, Region.LIP, Region.CHIN})
# Regions whose face/body side no source we hold gives: FACE_REGIONS' choice for them is Givre's own
# (ear = face; scalp, neck = body), and a clinic's config (Config.zoning) may change it.
UNSOURCED_ZONE_REGIONS = frozenset({Region.EAR, Region.SCALP, Region.NECK})


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: Region
    side: Literal["left", "right", "midline"] | None = None
    detail: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""

    @property
    def zone(self) -> Zone:
        """Face or rest of the body: the distinction the billing codes make (Givre's own choice for the ear, scalp, neck)."""
        return Zone.FACE if self.region in FACE_REGIONS else Zone.BODY

    def zone_for(self, zoning: Zoning) -> Zone:
        """The zone with the clinic's choice for the regions no source places (Config.zoning) applied."""
        chosen = next((zone for region, zone in zoning.items() if region == self.region.value), None)
        return Zone(chosen) if chosen is not None else self.zone

    @property
    def zone_unsourced(self) -> bool:
        """No source we hold says on which side of the face/body line this region falls."""
        return self.region in UNSOURCED_ZONE_REGIONS

    def describe(self) -> str:
        parts = [self.region.value, self.side or "", self.detail]
        return ", ".join(p for p in parts if p)


class Lesion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profile_id: str = Field(min_length=1)
    site: Site
    size_mm: float | None = Field(default=None, gt=0, le=100)
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] = ""
    photo: Path | None = None
    # False for an aesthetic act: not reimbursable, no 'remboursement demandé' (the practice sheet)
    reimbursable: bool = True

    @model_validator(mode="after")
    def _photo_or_description(self) -> Lesion:
        if self.photo is None and not self.description:
            raise ValueError("the record needs a photo or a short description of the lesion (with its site)")
        return self


class SessionInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    operator: PseudoId
    patient: PseudoId
