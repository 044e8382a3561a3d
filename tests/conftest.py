"""Shared test set-up: one torch thread per test process.

Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads per process
made 3-D convolutions 10-300x slower (oversubscription); one thread keeps the suite fast and steady.
"""

import torch

torch.set_num_threads(1)
