"""The one exception type for bad input: entry points print its message (file, line, key) without a traceback."""


class PipelineInputError(Exception):
    """Input that the pipeline refuses: the message names the file, line or config key at fault."""
