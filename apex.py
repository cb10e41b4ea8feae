"""Entry point: `python apex.py plan --model llama3-70b --num-gpus-per-node 8 ...`."""

import sys

if __name__ == "__main__":
    try:
        from apex_fast.entry import main

        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the modules load
        sys.stderr.write("interrupted\n")
        code = 130
    sys.exit(code)
