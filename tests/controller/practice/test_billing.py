"""Billing proposal from the practice sheet's CCAM codes: zone and count bands, association, aesthetic acts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from controller.practice.billing import Act, BillingError, load_table, parse_choice, propose
from controller.records.lesion import Zone


def test_the_shipped_table_holds_the_sheets_codes_and_marks_what_is_unverified() -> None:
    table = load_table()
    codes = {c.code: c for c in table.code}
    assert set(codes) == {"QANP007", "QANP005", "QZNP004", "QZNP012", "QZNP005", "QZNP022", "QZNP014"}
    assert codes["QZNP012"].tariff_eur == Decimal("30.53") and codes["QZNP012"].verified
    assert not codes["QZNP004"].verified and codes["QZNP004"].tariff_eur is None  # never invented
    # A label is the published one with the page it was read on, or none: no inferred text poses as a label.
    for code in table.code:
        assert code.verified == bool(code.label) and code.verified == bool(code.label_source)
        assert code.display == (code.label if code.verified else None)
        assert code.verified or code.unverified  # what is not known is said in the data
    assert {c.code for c in table.code if c.verified} == {"QANP005", "QZNP012", "QZNP005"}
    assert "30,53" in codes["QZNP012"].tariff_source


def test_the_association_rule_is_data_with_its_source_and_says_what_is_not_verified() -> None:
    rule = load_table().rule
    assert rule.max_acts == 2 and "UNCAM du 18/07/2005" in rule.source
    rates = {c.code: (c.rate, c.proposed) for c in rule.code}
    assert rates == {1: (Decimal("1"), True), 2: (Decimal("0.5"), True), 3: (Decimal("0.75"), False)}
    assert "not verified" in next(c for c in rule.code if c.code == 3).unverified
    face_body = rule.pair_of("body", "face")
    assert face_body is not None and face_body.allowed == "unverified"
    proposal = propose([Act(Zone.FACE, "cryotherapy", True), Act(Zone.BODY, "cryotherapy", True)], load_table())
    assert any("unverified: whether a face act (QANP) and a body act (QZNP) may be billed together" in w for w in proposal.warnings)


def test_a_clinic_table_without_an_association_rule_takes_the_shipped_one_and_a_verified_code_needs_its_label(
        tmp_path: Path) -> None:
    entry = ('[[code]]\ncode = "QZNP004"\nzone = "body"\ntechnique = "cryotherapy"\nlesions_min = 1\nlesions_max = 10\n'
             'verified = {verified}\ntariff_eur = ""\nsource = "clinic"\n')
    clinic = tmp_path / "clinic.toml"
    clinic.write_text('version = "c"\n' + entry.format(verified="false"), encoding="utf-8")
    assert load_table(clinic).rule == load_table().rule
    clinic.write_text('version = "c"\n' + entry.format(verified="true"), encoding="utf-8")
    with pytest.raises(BillingError, match="verified = true needs the published label"):
        load_table(clinic)


def test_face_and_body_lesions_propose_two_codes_with_association() -> None:
    acts = [Act(Zone.FACE, "cryotherapy", True)] * 2 + [Act(Zone.BODY, "cryotherapy", True)] * 12 + [Act(Zone.FACE, "cryotherapy", False)]
    proposal = propose(acts, load_table())
    first, second = proposal.acts
    assert (first.code, first.association_code, first.rate, first.amount_eur) == ("QZNP012", 1, Decimal("1"), Decimal("30.53"))
    assert (second.code, second.association_code, second.rate, second.amount_eur) == ("QANP007", 2, Decimal("0.5"), None)
    assert proposal.aesthetic_lesions == 1  # not reimbursable: left out of the proposal
    assert any("QANP007: label not verified" in w for w in proposal.warnings)
    assert any("order of association" in w for w in proposal.warnings)


def test_a_single_act_has_no_association_code_and_a_third_is_not_billed() -> None:
    single = propose([Act(Zone.BODY, "cryotherapy", True)] * 3, load_table())
    (act,) = single.acts
    assert act.code == "QZNP004" and act.association_code is None and not act.verified
    three = propose([Act(Zone.BODY, "cryotherapy", True), Act(Zone.FACE, "cryotherapy", True), Act(Zone.BODY, "cryosurgery", True)],
                    load_table())
    assert len(three.acts) == 2 and any("at most 2 acts" in line for line in three.not_billed)


def test_a_group_without_a_code_is_named_by_its_zone_in_words(tmp_path: Path) -> None:
    body_only = tmp_path / "body-only.toml"
    body_only.write_text('version = "t"\n[[code]]\ncode = "QZNP004"\nzone = "body"\ntechnique = "cryotherapy"\nlesions_min = 1\n'
                         'lesions_max = 10\nlabel = "a label"\nverified = false\ntariff_eur = ""\nsource = "test"\n', encoding="utf-8")
    proposal = propose([Act(Zone.FACE, "cryotherapy", True)] * 2, load_table(body_only))
    assert proposal.not_billed == ("2 cryotherapy lesion(s), face: no code in the table",)  # the zone's value, not Zone.FACE


def test_a_table_with_overlapping_bands_or_a_repeated_code_is_refused(tmp_path: Path) -> None:
    def entry(code: str, low: int, high: int) -> str:
        return (f'[[code]]\ncode = "{code}"\nzone = "body"\ntechnique = "cryotherapy"\nlesions_min = {low}\nlesions_max = {high}\n'
                f'label = "a label"\nverified = false\ntariff_eur = ""\nsource = "test"\n')
    overlapping = tmp_path / "overlap.toml"
    overlapping.write_text('version = "t"\n' + entry("QZNP004", 1, 10) + entry("QZNP012", 10, 50), encoding="utf-8")
    with pytest.raises(BillingError, match="QZNP004 and QZNP012 both cover cryotherapy bands that overlap"):
        load_table(overlapping)
    repeated = tmp_path / "repeated.toml"
    repeated.write_text('version = "t"\n' + entry("QZNP004", 1, 10) + entry("QZNP004", 11, 50), encoding="utf-8")
    with pytest.raises(BillingError, match="QZNP004 appears twice"):
        load_table(repeated)


@pytest.mark.parametrize(("items", "message"), [
    (["QZNP004:4"], r"association code must be one of 1 \(100 %\), 2 \(50 %\), 3 \(75 %\)"),
    (["QZNP004:1", "QANP007:1"], "different association codes"),
    (["QZNP004:1", "QANP007:2", "QZNP012:2"], "at most 2 acts"),
    (["XXXX123"], "not a code in the billing table"),
])
def test_a_bad_clinician_choice_says_what_is_allowed(items: list[str], message: str) -> None:
    with pytest.raises(BillingError, match=message):
        parse_choice(items, load_table())


def test_the_clinicians_choice_reads_codes_in_any_case_with_their_association() -> None:
    chosen = parse_choice(["qznp012:1", "QANP007:2"], load_table())
    assert [(c.code, c.association_code) for c in chosen] == [("QZNP012", 1), ("QANP007", 2)]
