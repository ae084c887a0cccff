"""Worker: the trainer CLI with megatron's checkpoint writer processes failing: `full-disk` (an OSError, as on a
full disk) or `killed` (SIGKILL, as by the OOM killer).

The writers are forked from the trainer while it saves, so the patch made here reaches them. The guard matters:
megatron's helper process is spawned and re-imports this file."""
import errno
import os
import signal
import sys


def _full_disk(transforms, stream, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", stream.name)


def _killed(transforms, stream, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from workflow_scripts.train import trainer as train

    filesystem_async._write_item = {"full-disk": _full_disk, "killed": _killed}[sys.argv[1]]
    sys.exit(train.main(sys.argv[2:]))
