import sys

from marco_demo.cli import main

sys.exit(main())
