"""``python -m dvis_attn_pl``: the command line (see ``dvis_attn_pl.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
