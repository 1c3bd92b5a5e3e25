"""The dataset layer: discovery, musubi dataset.toml, buckets, image loading, order, lint.

Modules: `buckets` (make_buckets, select_bucket), `images` (load_bucketed_image), `items`
(DatasetItem, load_items), `order` (epoch_batches, steps_per_epoch), `musubi_toml`
(read_dataset_toml, dataset_toml_text), `lint` (check_dataset). Nothing here imports torch.
"""
