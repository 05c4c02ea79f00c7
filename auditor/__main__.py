"""``python -m auditor``: the same as the ``3cx-auditor`` command; nothing of its own."""

from auditor.cli import main

raise SystemExit(main())
