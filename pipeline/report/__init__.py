"""A run's HTML report: the page (`page`: summary, table, per clip the input and the edit side by side),
two runs compared (`compare`: labelled side-by-side animations and frame strips) and the metric plots
(`plots`). It reads what the data layer (`pipeline.dataset`) wrote and writes nothing else."""
