"""Binding stages (LightningModules), the InfoNCE loss, datamodules and retrieval metrics."""
