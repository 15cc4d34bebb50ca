"""Input and output: video files and frame folders (PyAV), frame sizes, depth files, and the one
atomic-write helper."""
