"""The device agent: ``python -m fleet.agent --connect ...`` (the program is ``fleet.bridge.agent``)."""

import sys

from fleet.bridge.agent import main

if __name__ == "__main__":
    sys.exit(main())
