import sys

from ftcp.agent.cli import main

sys.exit(main())
