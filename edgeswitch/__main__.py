import sys

from edgeswitch.cli.main import main

sys.exit(main())
