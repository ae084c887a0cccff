"""Data stages: C4 consolidation and tokenization, GovReport packing, OpenOrca preprocessing, UltraChat packing."""
