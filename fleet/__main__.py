from fleet.run import main
import sys

sys.exit(main())
