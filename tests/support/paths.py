"""Where the repository's own files are, for tests that read the documents they check."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
