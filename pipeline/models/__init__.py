"""The models: loading by hub id or folder, depth (DPT), captions (BLIP), the builder of tiny folders."""
