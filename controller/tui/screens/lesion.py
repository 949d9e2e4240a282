"""One lesion's form: the site, its size and description, and the profile to treat it with."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import ValidationError
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Checkbox, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from controller.clinic import Clinic
from controller.procedure.dose import limit_chain
from controller.records.lesion import FACE_REGIONS, Lesion, Region, Site
from controller.records.photo import PhotoRefused, load_photo
from controller.tui.screens.base import GivreScreen
from controller.tui.screens.procedure import ProcedureScreen
from controller.tui.widgets.title_bar import TitleBar
from profiles.library import LoadedProfile

TIMES = "\N{MULTIPLICATION SIGN}"  # between a freeze time and its number of cycles


class LesionScreen(GivreScreen):
    """The form on the left, the profiles for this device (searchable, with their limits) on the right."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+n", "next", "Checklist", show=True, priority=True)]

    def compose(self) -> ComposeResult:
        face = [(f"face: {r.value}", r.value) for r in Region if r in FACE_REGIONS]
        body = [(f"body: {r.value}", r.value) for r in Region if r not in FACE_REGIONS]
        yield TitleBar()
        with Horizontal():
            with VerticalScroll(id="lesion-form"):
                yield Label("Site")
                yield Select(face + body, prompt="region (face / body)", id="region")
                yield Select([("left", "left"), ("right", "right"), ("midline", "midline")], prompt="side", id="side")
                yield Input(placeholder="site detail (free text)", id="detail")
                yield Input(placeholder="size in mm", id="size")
                yield Input(placeholder="description (or a photo)", id="description")
                yield Input(placeholder="photo file path (optional)", id="photo")
                yield Checkbox("aesthetic act (not reimbursable)", id="aesthetic")
                yield Static("", id="error", classes="error", markup=False)
            with Vertical(id="profile-pane"):
                yield Input(placeholder="search profiles", id="search")
                yield OptionList(*profile_options(self.app.clinic), id="profiles")
                yield Static("", id="profile-detail", markup=False)
        yield Button("Continue to checklist (ctrl+n)", id="next", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#region", Select).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            options = self.query_one("#profiles", OptionList)
            options.clear_options()
            options.add_options(profile_options(self.app.clinic, event.value))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self.query_one("#profile-detail", Static).update(profile_detail(self.app.clinic, event.option.id))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_next()

    def action_next(self) -> None:
        clinic = self.app.clinic
        error = self.query_one("#error", Static)
        options = self.query_one("#profiles", OptionList)
        highlighted = options.get_option_at_index(options.highlighted) if options.highlighted is not None else None
        if highlighted is None or not highlighted.id:
            error.update("✗ profile: pick one in the list (arrows, then ctrl+n)")
            return
        region = self.query_one("#region", Select).value
        side = self.query_one("#side", Select).value
        size_text = self.query_one("#size", Input).value.strip()
        photo_text = self.query_one("#photo", Input).value.strip()
        try:
            size = float(size_text) if size_text else None
        except ValueError:
            error.update(f"✗ size: {size_text!r} is not a number of mm (e.g. 4 or 4.5)")
            return
        try:
            lesion = Lesion(
                profile_id=highlighted.id,
                # the form's raw choices, validated as the site's fields (a blank region is refused here)
                site=Site.model_validate({"region": region if isinstance(region, str) else "",
                                          "side": side if isinstance(side, str) else None,
                                          "detail": self.query_one("#detail", Input).value}),
                size_mm=size, description=self.query_one("#description", Input).value,
                photo=Path(photo_text).expanduser() if photo_text else None,
                reimbursable=not self.query_one("#aesthetic", Checkbox).value,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "lesion"
            hint = " (pick a region: face or body)" if "region" in where else ""
            error.update(f"✗ {where}: {str(first['msg']).removeprefix('Value error, ')}{hint}")
            return
        assert clinic.treatment is not None  # the session screen opened it before pushing this one
        try:
            if lesion.photo is not None:
                load_photo(lesion.photo, clinic.config.max_photo_bytes)  # the clinic's limit; the treatment stores it
            procedure = clinic.treatment.lesion(lesion, clinic.library.get(highlighted.id), trigger=clinic.trigger)
        except PhotoRefused as exc:
            error.update(f"✗ {exc}")
            return
        clinic.procedure = procedure
        clinic.supervisor.attach(procedure)
        self.app.push_screen(ProcedureScreen())


def profile_options(clinic: Clinic, search: str = "") -> list[Option]:
    """The profiles for the connected device's kind whose id or names contain the search, by id."""
    needle = search.lower().strip()
    items: list[LoadedProfile] = sorted(clinic.library.for_device(clinic.device_kind), key=lambda lp: lp.profile.id)
    return [
        Option(f"{lp.profile.name_fr} / {lp.profile.name_en}  [{freeze_range(lp)} s {TIMES} {lp.profile.cycles}]", id=lp.profile.id)
        for lp in items
        if not needle or needle in f"{lp.profile.id} {lp.profile.name_fr} {lp.profile.name_en}".lower()
    ]


def freeze_range(lp: LoadedProfile) -> str:
    f = lp.profile.freeze_s
    return f"{f.min:g}" if f.min == f.max else f"{f.min:g}-{f.max:g}"


def profile_detail(clinic: Clinic, profile_id: str) -> str:
    """A profile's times, thaw, source and the chain of limits that gives this device's dose."""
    lp = clinic.library.get(profile_id)
    p = lp.profile
    cap = clinic.link.identity.max_freeze_ms if clinic.link and clinic.link.identity else None
    dose = limit_chain(p, None, clinic.config.clinic_max_freeze_s, cap)
    chain = " → ".join(f"{limit.name} {limit.ms / 1000:g} s" for limit in dose.chain)
    thaw = "none (one cycle)"
    if p.thaw is not None:
        thaw = f"≥ {p.thaw.min_s:g} s" + (f", tissue above {p.thaw.until_above_c:g} °C" if p.thaw.until_above_c is not None else "")
    origin = lp.origin + (" (overrides built-in)" if lp.overrides_builtin else "")
    return (f"{p.name_en}: {freeze_range(lp)} s {TIMES} {p.cycles}, default {p.freeze_s.default:g} s, from {p.timing_start.value}\n"
            f"thaw: {thaw}\nsource: {clinic.library.cite(p.freeze_s.source)}\nlimits: {chain} ⇒ {dose.effective_ms / 1000:g} s "
            f"({dose.limited_by})" + (f" ✗ below the minimum {dose.minimum_ms / 1000:g} s: arming is refused" if dose.below_minimum else "")
            + f"\norigin: {origin}" + "".join(f"\n! CAUTION: {c}" for c in p.caution) + "".join(f"\n? {u}" for u in p.uncertain))
