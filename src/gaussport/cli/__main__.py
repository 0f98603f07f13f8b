"""``python -m gaussport.cli``: the ``gaussport`` command."""

from . import main

raise SystemExit(main())
