"""Encoders as plain ``nn.Module``s, the ``GeoBind`` bundle, presets and weight I/O."""
