"""Quality: CLIP scoring, optical flow, the paper's three metrics, plots."""
