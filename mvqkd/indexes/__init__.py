"""mvqkd.indexes: the offline stage, teacher -> codebook indexes in a resumable shard store.

- :mod:`mvqkd.indexes.run`: ``run_extraction`` (resumable, parallel; ``mvqkd extract`` and
  ``mvqkd dump-embeddings --all``), ``merge``;
- :mod:`mvqkd.indexes.pipeline`: per-cut audio -> teacher -> stored array, one shard;
- :mod:`mvqkd.indexes.store`: shard files, atomic renames, done markers, ``plan.json``;
- :mod:`mvqkd.indexes.config`: the options of ``extract`` / ``dump-embeddings``;
- :mod:`mvqkd.indexes.audio`: the bad-audio policy (resample, downmix, too short, corrupt);
- :mod:`mvqkd.indexes.join`, :mod:`mvqkd.indexes.validate`, :mod:`mvqkd.indexes.embeddings`,
  :mod:`mvqkd.indexes.make_cuts`.

The frame-count and pad/trim rule is :func:`mvqkd.conventions.num_frames` /
:func:`mvqkd.conventions.fit_frames`.

Cut fields (docs/FORMATS.md): ``codebook_indexes`` (uint8 ``(T, N)`` TemporalArray, 0.02 s)
with ``codebook_indexes_info``; ``teacher_embeddings`` (float16 ``(T, D)``) with
``teacher_embeddings_info``.
"""
