"""The one exception type for bad input: entry points print its message (file, line, key) without a traceback."""


class PipelineInputError(Exception):
    """Input that the pipeline refuses: the message names the file, line or config key at fault."""


class DiskFullError(PipelineInputError):
    """A write ran out of space. Not bad input, but handled alike: one line naming the output, exit 2, nothing
    published; rerunning cannot help until space is freed."""
