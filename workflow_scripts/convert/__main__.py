"""`python -m workflow_scripts.convert`: the stage's command line (workflow_scripts/convert/conversion.py)."""
from workflow_scripts.convert.conversion import main

raise SystemExit(main())
