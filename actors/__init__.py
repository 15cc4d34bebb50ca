"""Ray only: who runs where. The runner and its dispatcher, the precompute task, the editor actor, the
pool of metric actors, cluster checks and the reaper of a local instance. The data they move (manifest,
tables, records, resume markers, storage, report) is `pipeline.dataset`'s."""
