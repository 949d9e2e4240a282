"""The `givre` command: one module per command group; `main` is the entry point."""

from controller.cli.main import main

__all__ = ["main"]
