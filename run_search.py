"""Search Keras image classifiers: `python run_search.py --help`."""

import sys

from search.cli import main

if __name__ == "__main__":
    sys.exit(main())
