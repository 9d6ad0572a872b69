"""`python -m jaxdiff.cli`: the `jaxdiff` command."""

import sys

from . import main

if __name__ == "__main__":  # importing the module (e.g. to list the package) runs nothing
    sys.exit(main())
