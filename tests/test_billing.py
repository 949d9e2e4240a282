"""Billing proposal from the practice sheet's CCAM codes: zone and count bands, association, aesthetic acts."""

from __future__ import annotations

from decimal import Decimal

from controller.billing import Act, load_table, propose


def test_the_shipped_table_holds_the_sheets_codes_and_marks_what_is_unverified() -> None:
    table = load_table()
    codes = {c.code: c for c in table.code}
    assert set(codes) == {"QANP007", "QANP005", "QZNP004", "QZNP012", "QZNP005", "QZNP022", "QZNP014"}
    assert codes["QZNP012"].tariff_eur == Decimal("30.53") and codes["QZNP012"].verified
    assert not codes["QZNP004"].verified and codes["QZNP004"].tariff_eur is None  # never invented


def test_face_and_body_lesions_propose_two_codes_with_association() -> None:
    acts = [Act("face", "cryotherapy", True)] * 2 + [Act("body", "cryotherapy", True)] * 12 + [Act("face", "cryotherapy", False)]
    proposal = propose(acts, load_table())
    first, second = proposal.acts
    assert (first.code, first.association_code, first.rate, first.amount_eur) == ("QZNP012", 1, Decimal("1"), Decimal("30.53"))
    assert (second.code, second.association_code, second.rate, second.amount_eur) == ("QANP007", 2, Decimal("0.5"), None)
    assert proposal.aesthetic_lesions == 1  # not reimbursable: left out of the proposal
    assert any("QANP007: label not verified" in w for w in proposal.warnings)
    assert any("order of association" in w for w in proposal.warnings)


def test_a_single_act_has_no_association_code_and_a_third_is_not_billed() -> None:
    single = propose([Act("body", "cryotherapy", True)] * 3, load_table())
    (act,) = single.acts
    assert act.code == "QZNP004" and act.association_code is None and not act.verified
    three = propose([Act("body", "cryotherapy", True), Act("face", "cryotherapy", True), Act("body", "cryosurgery", True)], load_table())
    assert len(three.acts) == 2 and any("at most two acts" in line for line in three.not_billed)
