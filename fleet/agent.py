"""The device agent: ``python -m fleet.agent --connect ...`` (the program is ``fleet.bridge.agent``, its command
line ``fleet.bridge.agent_cli``)."""

import sys

from fleet.bridge.agent_cli import main

if __name__ == "__main__":
    sys.exit(main())
