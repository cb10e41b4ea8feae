"""Entry point: `python apex.py plan --model llama3-70b --num-gpus-per-node 8 ...`."""

import sys

from apex_fast.entry import main

if __name__ == "__main__":
    sys.exit(main())
