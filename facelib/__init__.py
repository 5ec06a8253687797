"""facelib — reproducing "Enhancing Facial Classification and Recognition using 3D Facial Models and Deep Learning".

See docs/ARCHITECTURE.md for the stages and the tables they exchange.
"""
import os as _os

# Passive OpenMP waiting must be chosen before torch loads its OpenMP runtime: with spinning threads, 2-thread
# torch runs up to 10× slower whenever the 2 cores are shared (measured in benchmarks/bench_classify.py).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# In a Jupyter kernel without ipywidgets, tqdm.auto warns ("IProgress not found") and falls back to the text bar —
# which is what we want: the text bar streams to the terminal of a batch run (facelib.study). Silence the warning
# before any module imports tqdm.auto.
import warnings as _warnings

_warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
