"""isloader: online importance sampling and pruning for PyTorch data loading."""
