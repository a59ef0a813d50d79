import sys

from instructerc.cli.main import main

sys.exit(main())
