"""The dataset's data layer, no Ray: the manifest (`manifest`), tables and their schema (`tables`: the
typed results row), the results table (`results`), resume markers (`resume`), storage through fsspec
(`storage`), the stored metrics (`stored_metrics`) and the derived datasets (`datasets`: labels,
augmented tables). One video's work is `pipeline.stages`; the report is `pipeline.report`; who runs
what where is `actors/`."""
