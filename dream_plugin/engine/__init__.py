"""The selection engine: the embedding helper, the host-state guard, k-means and precomputed picks."""
