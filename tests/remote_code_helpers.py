"""Shared by the tests that load checkpoints as remote code in a fresh process."""

# Python run first in such a process: from then on `import flashvideo` fails, as where the package is not installed.
BLOCK_FLASHVIDEO_IMPORT = """
import sys, importlib.abc

class BlockFlashVideo(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "flashvideo" or name.startswith("flashvideo."):
            raise ImportError("flashvideo is blocked in this process")

sys.meta_path.insert(0, BlockFlashVideo())
try:
    import flashvideo
    raise SystemExit("flashvideo should not be importable here")
except ImportError:
    pass
"""
