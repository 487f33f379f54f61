"""`python -m flashvideo.training ...`, `accelerate launch [--multi_gpu ...] -m flashvideo.training ...`."""

import sys

from .train import main

if __name__ == "__main__":
    sys.exit(main())
