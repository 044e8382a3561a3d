"""Leaf utilities used by every layer above them: checkpoint I/O, precision, FLOP counting, run folders."""
