"""CURVE key files: ``python -m fleet.keys DIR ...`` (the program is ``fleet.bridge.keys``)."""

import sys

from fleet.bridge.keys import main

if __name__ == "__main__":
    sys.exit(main())
