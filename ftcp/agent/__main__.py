import sys

from ftcp.agent.main import main

sys.exit(main())
