"""``python -m commsim`` is the ``commsim`` command."""

from commsim.cli import main

raise SystemExit(main())
