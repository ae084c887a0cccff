"""Generation with the converted model for the accuracy workload, sharded over TP x DP."""
