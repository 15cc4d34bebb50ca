"""One video's path, each stage a small class with a one-time setup (load the models) and a per-item
method, as every entry point calls them (`pix2video edit`, the Ray actors, Ray Data's map_batches):

    options     what a run decides (RunOptions) and the specs each stage gets from it
    precompute  PrecomputeStage: decode, resize, shots, depth, captions -> the precompute store
    store       the precompute store: layout, keys, arrays, the inversion cache
    record      PrecomputeRecord: one video's meta.json
    edit        EditStage: prepare (encode, invert each shot), edit every prompt, decode, write, mark
    items       the stages' rows in a Ray Data pipeline
    numerics    the same arithmetic in every process
"""
