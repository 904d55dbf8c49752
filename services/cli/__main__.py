"""`python -m services.cli ...` runs the same tool as the installed `herald` script."""

from services.cli.main import main

raise SystemExit(main())
