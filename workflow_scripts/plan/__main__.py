"""`python -m workflow_scripts.plan`: the stage's command line (workflow_scripts/plan/planner.py)."""
from workflow_scripts.plan.planner import main

raise SystemExit(main())
