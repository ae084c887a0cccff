"""`python -m workflow_scripts.train`: the stage's command line (workflow_scripts/train/trainer.py)."""
from workflow_scripts.train.trainer import main

raise SystemExit(main())
