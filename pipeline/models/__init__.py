"""The models: loading by hub id or folder (names like 'tiny' and 'toy' through the registry), depth (DPT),
captions (BLIP)."""
