"""All logic of the MLPerf LLM pipeline. Rules in ../rules call the `main(argv)` entry points of these modules."""
