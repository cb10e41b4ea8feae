"""Entry point: `python apex.py plan --model llama3-70b --num-gpus-per-node 8 ...`."""

import sys

if __name__ == "__main__":
    try:
        from apex_fast.entry import run
    except KeyboardInterrupt:  # Ctrl-C while the entry module loads
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run()
