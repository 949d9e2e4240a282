"""Helpers the tests share: the procedure rig (support.rig) and polling instead of sleeping (support.waiting).
tests/conftest.py exposes the rig as the ``make_rig`` fixture."""
