"""``python -m samdistill`` (and ``torchrun ... -m samdistill distill ...``) runs the CLI."""

import sys

from samdistill.cli import main

sys.exit(main())
