"""``lola.serve``: an HTTP rank/reward API embedding :class:`lola.client.EdgeAllocator` (docs/serving.md)."""
