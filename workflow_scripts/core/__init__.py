"""The small core every stage uses: CLI wrapper, errors, atomic writes, progress logging, config checking, job environment, worker pools and input readers."""
