"""``python -m shared.keys [--if-missing] DIR NAME...``: the command that makes
the CurveZMQ key pairs. What it writes, and the rules around it, live in
shared/wire/keys.py; this module only keeps the command's name.

Thread: main.
"""

import sys

from shared.wire.keys import main

if __name__ == "__main__":
    sys.exit(main())
