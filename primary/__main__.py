import sys

from primary.main import main

sys.exit(main())
