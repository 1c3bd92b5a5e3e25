"""The dataset layer: discovery, musubi dataset.toml, buckets, image and video loading, order,
lint.

Modules: `buckets` (make_buckets, select_bucket), `images` (load_bucketed_image), `items`
(DatasetItem, load_items), `order` (epoch_batches, steps_per_epoch), `musubi_toml`
(read_dataset_toml, dataset_toml_text), `lint` (check_dataset). Videos: `video` (probe and
decode with PyAV), `clips` (musubi's clip selection), `video_sources` (video datasets),
`video_frames` (a clip's pixels), `clip_list` (inspect clips), `video_lint`. Nothing here
imports torch.
"""
