"""Widgets the screens share: one module per widget."""
