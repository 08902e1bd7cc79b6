"""The samdistill version, in one place: pyproject.toml reads it (``[tool.setuptools.dynamic]``), the package
re-exports it, and run/eval summaries record it. A module of its own so that importing it pulls in nothing else.
"""

__version__ = "0.1.0"
