"""Ray: who runs where. Precompute tasks, editor actors, streaming, retries and resume."""
