import sys

from marco_operator.cli import main

sys.exit(main())
