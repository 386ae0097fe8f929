import sys

from secondary.main import main

sys.exit(main())
