"""`python -m actdistill ...` (also what `torchrun -m actdistill` runs)."""

import sys

from actdistill.cli import main

sys.exit(main())
