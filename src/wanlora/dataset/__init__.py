"""The dataset layer: discovery, musubi dataset.toml, buckets, image and video loading, order,
lint.

Modules: `entry` (DatasetEntry), `sources` (dataset_sources: a project's folders and
settings), `musubi_toml` (read_dataset_toml, dataset_toml_text), `buckets` (make_buckets,
select_bucket), `images` (load_bucketed_image), `items` (DatasetItem, load_items), `order`
(epoch_batches, steps_per_epoch), `lint/` (check_dataset, one module per kind of rule).
Videos: `video` (probe and decode with PyAV), `clips` (musubi's clip selection),
`video_sources` (video datasets), `video_frames` (a clip's pixels), `clip_list` (inspect
clips), `lint/videos` (video rules). Imports point one way (sources -> musubi_toml -> entry). Nothing here
imports torch.
"""
