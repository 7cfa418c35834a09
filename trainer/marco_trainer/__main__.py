import sys

from marco_trainer.cli import main

sys.exit(main())
