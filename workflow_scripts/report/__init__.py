"""Figures and tables of `snakemake --report`."""
