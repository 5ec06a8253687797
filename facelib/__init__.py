"""facelib — reproducing "Enhancing Facial Classification and Recognition using 3D Facial Models and Deep Learning".

See docs/ARCHITECTURE.md for the stages and the tables they exchange.
"""
import os as _os

# Passive OpenMP waiting must be chosen before torch loads its OpenMP runtime: with spinning threads, 2-thread
# torch runs up to 10× slower whenever the 2 cores are shared (measured in benchmarks/bench_classify.py).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
