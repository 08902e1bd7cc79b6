"""Data: reading images and masks, dataset layouts and splits, synthetic phantoms, prompt simulation."""
