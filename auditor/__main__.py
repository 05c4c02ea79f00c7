"""``python -m auditor``: the same as the ``3cx-auditor`` command."""

from auditor.cli import main

raise SystemExit(main())
