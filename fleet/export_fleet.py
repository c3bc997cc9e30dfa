"""Write a scenario's fleet as a trace: ``python -m fleet.export_fleet SCENARIO --out FILE.json`` (the program
is ``fleet.app.export_fleet``)."""

import sys

from fleet.app.export_fleet import main

if __name__ == "__main__":
    sys.exit(main())
