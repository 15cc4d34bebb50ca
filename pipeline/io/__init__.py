"""Input and output: video files and frame folders (PyAV), frame sizes, depth files, generated sample videos,
and the one atomic-write helper."""
