import sys

from ccapo_server.cli import main

sys.exit(main())
