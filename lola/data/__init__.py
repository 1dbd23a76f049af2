"""Data readers shared by training, replay and the load generator."""
