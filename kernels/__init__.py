"""lola.kernels: Numba policy kernels over struct-of-arrays bandit state."""
