"""Pix2Video: the method and its models. Pure PyTorch + diffusers + transformers; never imports Ray."""
