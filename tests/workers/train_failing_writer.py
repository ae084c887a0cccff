"""Worker: the trainer CLI with megatron's checkpoint writer processes failing as on a full disk.

The writers are forked from the trainer while it saves, so the patch made here reaches them. The guard matters:
megatron's helper process is spawned and re-imports this file."""
import errno
import sys


def _full_disk(transforms, stream, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", stream.name)


if __name__ == "__main__":
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from workflow_scripts import train

    filesystem_async._write_item = _full_disk
    sys.exit(train.main(sys.argv[1:]))
