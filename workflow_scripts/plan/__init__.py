"""Dry-run planning: jobs, resources and GPU-hours of a DAG.

CLI: python -m workflow_scripts.plan --profile P [--configfile F ...] (see planner.py)."""
