"""facelib — reproducing "Enhancing Facial Classification and Recognition using 3D Facial Models and Deep Learning".

See docs/ARCHITECTURE.md for the stages and the tables they exchange.
"""
__version__ = "0.1.0"
