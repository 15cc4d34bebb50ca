"""The dataset's data layer, no Ray: the manifest (`manifest`), tables and their schema (`tables`),
the results table (`results`), resume markers (`resume`), storage through fsspec (`storage`), the
per-video precompute record (`record`), the stored metrics (`stored_metrics`), the derived datasets
(`datasets`: labels, augmented tables) and the HTML report (`report`; `compare`: two runs side by
side). Who runs what where is `actors/`."""
