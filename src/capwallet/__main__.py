"""``python -m capwallet`` runs the CLI."""

import sys

from capwallet.cli import main

sys.exit(main())
