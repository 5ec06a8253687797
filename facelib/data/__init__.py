"""Data sources: the KDEF / FEI / folder loaders and the manifest (``datasets``), the synthetic set (``synthetic``)."""
