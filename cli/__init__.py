"""The ``feedback-loop`` command line: above stream/, consumers/ and producers/."""

import os

# One BLAS thread per process, set before numpy is first imported: the models' products are
# small, and on busy cores a multi-threaded BLAS pushed one 100k-item scan's p99 from under
# 1 ms to over 100 ms (bench/ann.py). Set the variable to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
