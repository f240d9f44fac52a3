"""jaxcd: bitemporal change detection in JAX/Flax (CDCluster, RCL, Dsfer-Net and baselines)."""

__version__ = "0.1.0"
