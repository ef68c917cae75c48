"""``python -m fake_provider``: serve the fake provider on a loopback port."""

import sys

from fake_provider.server import main

sys.exit(main())
