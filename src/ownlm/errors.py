"""The one exception type for mistakes a user can fix.

The CLI turns a ``UserError`` into a one-line message and exit code 2 — never a traceback.
Raise it at boundaries (files, flags, formats) with what was expected, what was found, and what to do.
"""

import re


class UserError(Exception):
    """A problem with the user's input, files or flags; ``str(err)`` is the whole message."""

    exit_code = 2


# Allocation failures, as Python and torch word them (CPU: "DefaultCPUAllocator: can't allocate memory: you
# tried to allocate ..."; CUDA/MPS: "... out of memory ...").
_NO_MEMORY = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")
# A full disk, as OSError says it or as wrapped by writers that do not raise OSError (safetensors' Rust
# writer: "IoError(Os { code: 28, kind: StorageFull ... })"; numpy's short write, GGUF's tensors:
# "4096 requested and 912 written").
_DISK_FULL = ("no space left on device", "os error 28", "storagefull", "disk quota exceeded", "os error 122")
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def out_of_memory(e: BaseException) -> bool:
    """``MemoryError``, or an error an allocator raised (torch's CPU and GPU wordings)."""
    if isinstance(e, MemoryError):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _NO_MEMORY)


def disk_full(e: BaseException) -> bool:
    """An ``OSError`` ENOSPC/EDQUOT, or any error whose words say the disk is full.

    >>> import errno; disk_full(OSError(errno.ENOSPC, "No space left on device")), disk_full(KeyError("x"))
    (True, False)
    """
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()
    return any(w in text for w in _DISK_FULL) or (isinstance(e, OSError) and bool(_SHORT_WRITE.search(text)))


def machine_error(e: BaseException) -> bool:
    """Out of memory or out of disk: the machine's limit, never the fault of the file being read. Code that
    turns a reader's failure into that file's reported problem re-raises these."""
    return out_of_memory(e) or disk_full(e)
