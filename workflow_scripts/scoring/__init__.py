"""MLPerf logs, compliance checks, ROUGE and the score table."""
